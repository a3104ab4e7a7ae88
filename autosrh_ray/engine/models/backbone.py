"""Building a backbone from its name (:mod:`.registry`) and checking it meets the contract before any training."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ...errors import ConfigError, import_object
from .registry import BUILT_IN, KEY, check_name


def constructor_options(name: str, hidden: Sequence[int], dropout: float,
                        options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``name``'s class is built with: ``model.options``, and for a built-in with a tower
    ``hidden`` and ``dropout`` (``model.options`` wins)."""
    tower = name in BUILT_IN and BUILT_IN[name].tower
    return {**({"hidden": list(hidden), "dropout": dropout} if tower else {}), **options}


def build_backbone(name: str, num_fields: int, dim: int, options: Mapping[str, Any]) -> nn.Module:
    """The backbone ``name`` names, built as ``Class(num_fields, dim, **options)`` (on the CPU).

    Args:
        name: a built-in's short name or ``package.module:ClassName``.
        num_fields: F, the fields of every row.
        dim: K, the embedding dimension.
        options: the constructor's keyword arguments (:func:`constructor_options`).

    Returns:
        The module.

    Raises:
        ConfigError: one line naming ``model.name`` when the class cannot be imported or built.
    """
    check_name(name)
    cls = import_object(BUILT_IN[name].path if name in BUILT_IN else name, KEY)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(KEY, f"{name} is not a torch.nn.Module class")
    try:
        return cls(num_fields, dim, **options)
    except Exception as exc:  # the user's constructor: a wrong signature, a bad option, a check of its own
        raise ConfigError(KEY, f"{name}({num_fields}, {dim}, **{dict(options)}) failed: "
                               f"{type(exc).__name__}: {exc}") from None


def probe_backbone(backbone: nn.Module, name: str, num_fields: int, dim: int) -> None:
    """One forward on a 2-row batch (random embeddings, zero first-order term): the output must be a finite
    floating tensor of shape (2,). Raises a one-line :class:`ConfigError` naming ``model.name`` otherwise."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, num_fields, dim, generator=generator)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(embeddings, torch.zeros(2))
    except Exception as exc:
        raise ConfigError(KEY, f"{name}: forward(embeddings (2, {num_fields}, {dim}), first_order (2,)) failed: "
                               f"{type(exc).__name__}: {exc}") from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(KEY, f"{name}: forward must return logits of shape (B,) = (2,) for 2 rows; got {shape}")
    if not out.dtype.is_floating_point or not bool(torch.isfinite(out).all()):
        raise ConfigError(KEY, f"{name}: forward returned {out.dtype} values that are not all finite")
