"""CARE models: the registry, ``create_model`` and checkpoint loading."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from care_serve.models.care import CARE, CARE_CONFIGS, CAREConfig, check_input_size
from care_serve.models.checkpoint import load_checkpoint, read_state_dict, unwrap_state_dict

__all__ = [
    "CARE",
    "CARE_CONFIGS",
    "CAREConfig",
    "check_input_size",
    "create_model",
    "get_config",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "unwrap_state_dict",
]


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(CARE_CONFIGS)


def get_config(name: str, **overrides: Any) -> CAREConfig:
    """The configuration of variant ``name`` with ``overrides`` applied."""
    if name not in CARE_CONFIGS:
        raise ValueError(
            f"unknown CARE variant {name!r}; known variants: {', '.join(list_models())}"
        )
    return dataclasses.replace(CARE_CONFIGS[name], **overrides)


def create_model(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    use_ema: bool = True,
    **overrides: Any,
) -> CARE:
    """Build variant ``name`` in eval mode, loading ``checkpoint`` with strict checking.

    ``overrides`` replace fields of the variant's ``CAREConfig`` (``num_classes``,
    ``distillation``, ...). Without a checkpoint the weights are random, which
    is only meant for tests and training from scratch.
    """
    model = CARE(get_config(name, **overrides))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, use_ema=use_ema)
    return model.eval()
