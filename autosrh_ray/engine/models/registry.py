"""Backbones by name: a built-in's short name (``fm``, ``deepfm``, …) or any PyTorch module as
``package.module:ClassName``, importable from the Python path of every process.

The contract every backbone meets, the built-ins included::

    ClassName(num_fields: int, dim: int, **options)
    forward(embeddings: Tensor (B, F, K), first_order: Tensor (B,)) -> logits: Tensor (B,)

``options`` is ``model.options``; the built-ins with a deep tower (widedeep, deepfm, mlp, neumf) also take
``model.hidden`` and ``model.dropout``; dcnv2 and dlrm take their towers from ``model.options`` alone.
Adding a built-in backbone is its module plus one line in :data:`BUILT_IN`; :mod:`.backbone` builds and probes
them. This module imports nothing but the error type, so the config can check a name without torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, import_object

KEY = "model.name"


@dataclass(frozen=True)
class BuiltIn:
    """A built-in backbone: its class's import path; ``tower``: it takes ``model.hidden`` and ``model.dropout``."""

    path: str
    tower: bool = False


BUILT_IN: dict[str, BuiltIn] = {
    "fm": BuiltIn("autosrh_ray.engine.models.fm:FM"),
    "widedeep": BuiltIn("autosrh_ray.engine.models.widedeep:WideDeep", tower=True),
    "deepfm": BuiltIn("autosrh_ray.engine.models.deepfm:DeepFM", tower=True),
    "mf": BuiltIn("autosrh_ray.engine.models.mf:MF"),
    "mlp": BuiltIn("autosrh_ray.engine.models.mlp:MLP", tower=True),
    "neumf": BuiltIn("autosrh_ray.engine.models.neumf:NeuMF", tower=True),
    # sized by model.options alone (their class defaults are sized for CPUs), so that a workflow's model.hidden
    # for DeepFM does not resize them
    "dcnv2": BuiltIn("autosrh_ray.engine.models.dcnv2:DCNv2"),
    "dlrm": BuiltIn("autosrh_ray.engine.models.dlrm:DLRM"),
}


def is_import_path(name: str) -> bool:
    """``package.module:ClassName`` rather than a built-in's short name."""
    return ":" in name


def check_name(name: str) -> None:
    """Raises a one-line :class:`ConfigError` unless ``name`` is a built-in or an import path whose module imports
    and has the class (a user's class is imported here, at config time, before any data is read; built-ins are not:
    their modules need torch)."""
    if name in BUILT_IN:
        return
    if not is_import_path(name):
        raise ConfigError(KEY, f"unknown model {name!r}: one of {' | '.join(BUILT_IN)}, or your own backbone as "
                               f"package.module:ClassName")
    if not isinstance(import_object(name, KEY), type):
        raise ConfigError(KEY, f"{name} is not a class")
