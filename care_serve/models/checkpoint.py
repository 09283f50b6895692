"""Reading CARE checkpoints safely and fitting them to a model.

Checkpoints are read with ``torch.load(weights_only=True)``: a file can hold
tensors and plain containers but can never execute code. The usual training
containers are unwrapped (``state_dict_ema``, ``model_ema``, ``state_dict``,
``model``) and DataParallel's ``module.`` prefix is stripped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from care_serve.errors import CheckpointError

__all__ = ["load_checkpoint", "read_state_dict", "unwrap_state_dict"]

EMA_KEYS = ("state_dict_ema", "model_ema")
PLAIN_KEYS = ("state_dict", "model")


def unwrap_state_dict(obj: Any, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Return the tensor mapping inside a checkpoint object.

    Prefers EMA weights when ``use_ema`` (as timm does), strips a ``module.``
    prefix, and raises ``CheckpointError`` when no state dict is found.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint holds a {type(obj).__name__}, expected a state_dict (a mapping of "
            "parameter names to tensors) or a container with one"
        )
    keys = (EMA_KEYS + PLAIN_KEYS) if use_ema else (PLAIN_KEYS + EMA_KEYS)
    for key in keys:
        inner = obj.get(key)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, torch.Tensor) for v in inner.values())
        ):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            "checkpoint contains no tensors; expected a state_dict or a container with one of "
            f"the keys {', '.join(EMA_KEYS + PLAIN_KEYS)}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | os.PathLike[str], use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a plain ``{name: tensor}`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged file, or a pickle that wants to run code
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0]} "
            "(expected a PyTorch file holding only tensors, as the official CARE releases are)"
        ) from exc
    return unwrap_state_dict(obj, use_ema=use_ema)


def _describe(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_compatible(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], ignore: tuple[str, ...] = ()
) -> None:
    """Raise ``CheckpointError`` naming missing, unexpected and mis-shaped entries."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict and not k.startswith(ignore)]
    unexpected = [k for k in state_dict if k not in expected and not k.startswith(ignore)]
    mismatched = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k])})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_describe(mismatched)}")
    if problems:
        raise CheckpointError(
            "checkpoint does not fit the model (is it the right variant?); " + "; ".join(problems)
        )


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    use_ema: bool = True,
    ignore: tuple[str, ...] = (),
) -> nn.Module:
    """Load an official-format checkpoint into ``model`` with strict checking.

    ``ignore`` lists key prefixes that are not taken from the checkpoint (for
    instance ``("head.", "dist_head.")`` when loading an ImageNet checkpoint
    into a backbone or a model with another number of classes); everything
    else must fit exactly.
    """
    state_dict = read_state_dict(path, use_ema=use_ema)
    if ignore:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    check_compatible(model, state_dict, ignore)
    model.load_state_dict(state_dict, strict=not ignore)
    return model
