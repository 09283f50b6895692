"""Building blocks shared by the dense-prediction networks (backbone, ConvBN units, FPN).

``build_backbone`` gives a CARE variant without classifier heads. The neck and
head pieces are made of ``Conv2d -> BatchNorm2d -> ReLU`` units so that
inference-time fusion folds every BatchNorm into its convolution (``fuse()`` on
``ConvNormAct``, or any generic Conv+BN folding walker) and onnxruntime fuses
Conv+ReLU. No GroupNorm (not foldable), no GELU (slow on CPU), and upsampling
uses ``scale_factor`` so exported graphs keep dynamic height and width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from care_serve.models import get_config
from care_serve.models.care import CARE
from care_serve.models.checkpoint import load_checkpoint

__all__ = ["FPN", "ConvNormAct", "DepthwiseSeparable", "backbone_channels", "build_backbone"]


class ConvNormAct(nn.Module):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> optional ReLU; ``fuse()`` folds the norm."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_chs)
        self.act: nn.Module = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> ConvNormAct:
        """Fold the BatchNorm (eval statistics) into the convolution, in place."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return self
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if self.conv.bias is not None:
            bias = bias + self.conv.bias * scale
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bias.detach().clone())
        self.bn = nn.Identity()
        return self


class DepthwiseSeparable(nn.Module):
    """Depthwise ``k x k`` ConvNormAct then pointwise 1x1 ConvNormAct (MobileNet style)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, act: bool = True) -> None:
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, kernel_size, groups=in_chs, act=True)
        self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 laterals to ``out_chs``, nearest 2x upsampling, sums.

    Takes maps ordered fine to coarse, each level half the size of the previous
    (true for CARE's stage outputs because inputs are multiples of 32), and
    returns ``len(in_chs)`` maps of ``out_chs`` channels at the same strides.
    There are no 3x3 output convolutions: the heads that follow start with
    their own depthwise 3x3, which also smooths the upsampling.
    """

    def __init__(self, in_chs: Sequence[int], out_chs: int) -> None:
        super().__init__()
        self.in_chs = tuple(in_chs)
        self.out_chs = out_chs
        self.laterals = nn.ModuleList(ConvNormAct(c, out_chs, 1, act=False) for c in self.in_chs)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.laterals):
            raise ValueError(f"FPN expects {len(self.laterals)} maps, got {len(features)}")
        maps = [lateral(f) for lateral, f in zip(self.laterals, features, strict=True)]
        for i in range(len(maps) - 1, 0, -1):
            maps[i - 1] = maps[i - 1] + F.interpolate(maps[i], scale_factor=2.0, mode="nearest")
        return maps


def backbone_channels(feature_info: Sequence[dict[str, Any]], strides: Sequence[int]) -> list[int]:
    """Channel counts of the backbone maps at ``strides``, read from ``feature_info``."""
    by_stride = {int(info["reduction"]): int(info["num_chs"]) for info in feature_info}
    missing = [s for s in strides if s not in by_stride]
    if missing:
        raise ValueError(
            f"backbone has no output at strides {missing}; available: {sorted(by_stride)}"
        )
    return [by_stride[s] for s in strides]


def build_backbone(
    variant: str, checkpoint: str | os.PathLike[str] | None = None, use_ema: bool = True
) -> CARE:
    """A CARE variant without classifier heads, optionally loading an ImageNet checkpoint.

    The checkpoint's ``head.`` and ``dist_head.`` entries are ignored; everything
    else must fit exactly (``CheckpointError`` otherwise).
    """
    backbone = CARE(get_config(variant, num_classes=0, distillation=False))
    if checkpoint is not None:
        load_checkpoint(backbone, checkpoint, use_ema=use_ema, ignore=("head.", "dist_head."))
    return backbone
