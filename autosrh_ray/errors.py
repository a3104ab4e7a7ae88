"""The error a user's bad input raises: one line that names the config key (and the file and line, when known)."""
from __future__ import annotations

import importlib
from typing import Any


class ConfigError(ValueError):
    """A bad config value; ``str(err)`` is one line naming the key."""

    def __init__(self, key: str, message: str, where: str = ""):
        self.key, self.message = key, message
        text = f"{key}: {message}" if key else message
        super().__init__(f"{where}: {text}" if where else text)


def import_object(path: str, key: str) -> Any:
    """The object an import path names, ``package.module:attribute`` (the module importable from the Python path).

    Args:
        path: ``"package.module:attribute"``.
        key: the config key that named it, for the error.

    Returns:
        The attribute.

    Raises:
        ConfigError: one line naming ``key`` when the path is malformed, the module cannot be imported or has no
            such attribute.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(key, f"{path!r} is not an import path: write package.module:Name")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # anything the user's module raises while importing
        raise ConfigError(key, f"cannot import {module_name!r} ({type(exc).__name__}: {exc}); it must be "
                               f"importable from the Python path (PYTHONPATH) of every process") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(key, f"module {module_name!r} has no {attribute!r}") from None
