"""CARE segmenter: CARE backbone + a light Semantic-FPN decoder over all four strides.

Design (Kirillov et al., "Panoptic FPN", semantic branch, slimmed for CPUs):

- Backbone: a CARE variant without classifier heads; stage outputs at strides
  4, 8, 16, 32 (the stride-32 one is the widened head-width map, used as is).
- A top-down FPN decoder (``decoder_chs`` channels): from stride 32 down to
  stride 4, each level adds its 1x1 lateral to the 2x-upsampled coarser map
  and refines the sum with one depthwise-separable ConvBN-ReLU unit; a 1x1
  convolution gives the class logits at stride 4. (The original Semantic FPN
  upsamples every level to stride 4 and sums there; measured on care_tiny at
  320x320 that decoder cost +37% of the backbone's latency, this one +16%.)

Output (``forward``): ``seg_logits (B, K, H/4, W/4)``; class 0 is background.
Resizing to the original image and the argmax are numpy/Pillow in
``care_serve.postprocess.segmentation``.

Targets (``loss`` / ``forward_loss``): int64 masks ``(B, H, W)`` of class indices
in network-input pixels, ``IGNORE_INDEX`` (255) for pixels without a label
(e.g. the letterbox padding).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from care_serve.models.necks import (
    ConvNormAct,
    DepthwiseSeparable,
    backbone_channels,
    build_backbone,
)
from care_serve.postprocess.segmentation import (
    IGNORE_INDEX,
    SEGMENTATION_OUTPUT_NAMES,
    SEGMENTATION_OUTPUT_STRIDE,
)

__all__ = [
    "IGNORE_INDEX",
    "SEGMENTATION_OUTPUT_NAMES",
    "SEGMENTATION_OUTPUT_STRIDE",
    "CARESegmenter",
    "SemanticFPNDecoder",
    "segmentation_loss",
]

SEGMENTATION_STRIDES = (4, 8, 16, 32)


class SemanticFPNDecoder(nn.Module):
    """Top-down FPN decoder over all four strides, ending in a 1x1 classifier at stride 4.

    Coarse to fine: ``x = unit_i(lateral_i(f_i) + up2(x))``, where ``lateral_i`` is
    a 1x1 ConvBN to ``decoder_chs``, ``up2`` nearest 2x upsampling and
    ``unit_i`` one depthwise-separable ConvBN-ReLU unit. Every level's features
    reach the stride-4 map through the sums, each refined at its own
    resolution, so only one unit runs at stride 4.
    """

    def __init__(self, in_chs: list[int], decoder_chs: int, num_classes: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(ConvNormAct(c, decoder_chs, 1, act=False) for c in in_chs)
        self.units = nn.ModuleList(DepthwiseSeparable(decoder_chs, decoder_chs) for _ in in_chs)
        self.classifier = nn.Conv2d(decoder_chs, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.laterals):
            raise ValueError(f"decoder expects {len(self.laterals)} maps, got {len(features)}")
        x = self.units[-1](self.laterals[-1](features[-1]))
        for i in range(len(features) - 2, -1, -1):
            up = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.units[i](self.laterals[i](features[i]) + up)
        return self.classifier(x)


def segmentation_loss(
    seg_logits: torch.Tensor,
    masks: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    hard_fraction: float | None = None,
) -> dict[str, torch.Tensor]:
    """Cross-entropy of stride-4 logits, upsampled (bilinear) to the masks' size.

    ``masks``: int ``(B, H, W)`` class indices, ``ignore_index`` where unlabelled.
    ``hard_fraction`` (0-1]: average over only the hardest that share of the labelled
    pixels of the batch (online hard example mining, as bootstrapped cross-entropy),
    so that thin strokes and small shapes are not outvoted by easy background.
    Returns ``loss`` (to backpropagate) and ``pixel_acc`` (labelled pixels only).
    """
    if hard_fraction is not None and not 0.0 < hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in (0, 1], got {hard_fraction}")
    if masks.ndim != 3 or masks.shape[0] != seg_logits.shape[0]:
        raise ValueError(
            f"masks must be (B, H, W) with B={seg_logits.shape[0]}, got {tuple(masks.shape)}"
        )
    masks = masks.to(seg_logits.device, torch.long)
    num_classes = seg_logits.shape[1]
    labelled = masks != ignore_index
    if labelled.any() and (masks[labelled].min() < 0 or masks[labelled].max() >= num_classes):
        raise ValueError(
            f"mask values must be in [0, {num_classes}) or {ignore_index} (ignored); got "
            f"{sorted(set(masks.unique().tolist()))}"
        )
    logits = F.interpolate(seg_logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    if not labelled.any():
        return {"loss": logits.sum() * 0.0, "pixel_acc": torch.tensor(0.0)}
    if hard_fraction is None or hard_fraction == 1.0:
        loss = F.cross_entropy(logits, masks, ignore_index=ignore_index)
    else:
        per_pixel = F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="none")
        labelled_losses = per_pixel[labelled]
        k = max(1, math.ceil(hard_fraction * labelled_losses.numel()))
        loss = labelled_losses.topk(k, sorted=False).values.mean()
    with torch.no_grad():
        acc = (logits.argmax(dim=1)[labelled] == masks[labelled]).float().mean()
    return {"loss": loss, "pixel_acc": acc}


class CARESegmenter(nn.Module):
    """CARE backbone + Semantic-FPN-lite decoder; see the module docstring.

    Args:
        variant: CARE variant of the backbone (``care_tiny``, ``care_s0``, ...).
        num_classes: number of classes including background (class 0).
        backbone_checkpoint: optional official ImageNet checkpoint for the backbone.
        decoder_chs: channels of the decoder; default: the backbone's stride-8
            width (32 for care_tiny, 64 for care_s0/s1/s2).
    """

    output_names = SEGMENTATION_OUTPUT_NAMES
    output_stride = SEGMENTATION_OUTPUT_STRIDE

    def __init__(
        self,
        variant: str = "care_tiny",
        num_classes: int = 21,
        *,
        backbone_checkpoint: str | os.PathLike[str] | None = None,
        decoder_chs: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"num_classes counts the background and must be >= 2, got {num_classes}"
            )
        self.num_classes = num_classes
        self.backbone = build_backbone(variant, backbone_checkpoint)
        self.pretrained_cfg = self.backbone.pretrained_cfg
        in_chs = backbone_channels(self.backbone.feature_info, SEGMENTATION_STRIDES)
        decoder_chs = decoder_chs or in_chs[1]
        self.init_kwargs: dict[str, Any] = {
            "variant": variant,
            "num_classes": num_classes,
            "decoder_chs": decoder_chs,
        }
        self.decoder = SemanticFPNDecoder(in_chs, decoder_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``seg_logits (B, K, H/4, W/4)`` for input ``B x 3 x H x W``."""
        return self.decoder(self.backbone.forward_intermediates(x))

    def loss(self, seg_logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """``segmentation_loss`` (cross-entropy, ``IGNORE_INDEX`` ignored)."""
        return segmentation_loss(seg_logits, masks)

    def forward_loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward ``images`` and return the loss dict (call ``.train()`` first to train)."""
        return self.loss(self(images), masks)
