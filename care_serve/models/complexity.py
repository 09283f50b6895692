"""Parameter and multiply-accumulate (MAC) counts, matching the official CARE figures.

The authors' figures (``flop_counter_gmacs_224`` in the fixtures) are what
``torch.utils.flop_counter.FlopCounterMode`` reports for the eval-mode network
with both heads, divided by two (it counts a MAC as two FLOPs): every
convolution, the three batched matmuls of each linear attention
(``phi(k)^T v``, ``phi(q) mean(phi(k))`` and ``phi(q) kv``) and both heads'
Linear layers. Element-wise work (BatchNorm, GELU, ELU, LayerNorm, pooling,
adds) is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Complexity", "count_macs", "count_params", "measure"]


@dataclass
class Complexity:
    """Size and cost of one model at one input size (batch 1)."""

    params: int
    params_without_dist_head: int
    gmacs: float
    input_size: tuple[int, int]
    gmacs_by_module: dict[str, float] = field(default_factory=dict)
    gmacs_by_op: dict[str, float] = field(default_factory=dict)


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(all parameters, parameters without the distillation head)``."""
    total = sum(p.numel() for p in model.parameters())
    dist = getattr(model, "dist_head", None)
    dist_params = sum(p.numel() for p in dist.parameters()) if isinstance(dist, nn.Module) else 0
    return total, total - dist_params


def count_macs(
    model: nn.Module, input_size: Sequence[int] = (224, 224), in_chans: int = 3, depth: int = 2
) -> tuple[float, dict[str, float], dict[str, float]]:
    """``(GMACs, GMACs per module up to ``depth`` dots, GMACs per aten op)`` for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    height, width = int(input_size[0]), int(input_size[1])
    x = torch.zeros(1, in_chans, height, width)
    counter = FlopCounterMode(display=False, depth=depth)
    with counter, torch.no_grad():
        model.eval()(x)
    counts = counter.get_flop_counts()
    by_module: dict[str, float] = {}
    for name, per_op in counts.items():
        # Names are "<RootClass>.<path>"; keep module paths with at most ``depth`` parts.
        parts = name.split(".")[1:]
        if name != "Global" and 0 < len(parts) <= depth:
            by_module[".".join(parts)] = sum(per_op.values()) / 2e9
    by_op = {str(op): n / 2e9 for op, n in counts.get("Global", {}).items()}
    return counter.get_total_flops() / 2e9, by_module, by_op


def measure(model: nn.Module, input_size: Sequence[int] = (224, 224)) -> Complexity:
    """Parameters and GMACs of ``model`` at ``input_size`` (height, width)."""
    params, params_single = count_params(model)
    gmacs, by_module, by_op = count_macs(model, input_size)
    return Complexity(
        params=params,
        params_without_dist_head=params_single,
        gmacs=gmacs,
        input_size=(int(input_size[0]), int(input_size[1])),
        gmacs_by_module=by_module,
        gmacs_by_op=by_op,
    )
