"""CARE detector: CARE backbone + FPN (strides 8-32) + light anchor-free head (FCOS/NanoDet).

Design (see ``docs/dense.md`` for the measurements behind it):

- Backbone: a CARE variant without its classifier heads; stage outputs at
  strides 8, 16 and 32. The stride-32 map is the widened head-width map
  (``r2 * C`` channels) that the ImageNet heads read; it is used as is (a 1x1
  lateral reduces it; at stride 32 that costs little).
- Neck: ``FPN`` (1x1 laterals + top-down sums) to ``neck_chs`` channels.
- Head: per level (no weight sharing, so BatchNorm statistics stay per level
  and fold away), ``num_convs`` depthwise-separable ConvBN-ReLU units shared by
  classification and box regression, then one 1x1 convolution predicting
  ``K`` class logits and 4 box distances (softplus, in stride units).
- Training: FCOS assignment with centre sampling and per-level size ranges;
  quality focal loss on the classification (target = IoU of the predicted box
  with its ground truth, so the score also ranks localisation quality and no
  centre-ness branch is needed); GIoU loss on the boxes.

Outputs (``forward``): ``(cls_logits (B, N, K), box_ltrb (B, N, 4))``; decoding,
thresholds and NMS are numpy in ``care_serve.postprocess.detection``.

Targets (``loss`` / ``forward_loss``): one dict per image with ``boxes`` float
``(n, 4)`` xyxy in network-input pixels and ``labels`` int64 ``(n,)`` in
``[0, num_classes)``; ``n`` may be 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from care_serve.models.necks import FPN, DepthwiseSeparable, backbone_channels, build_backbone
from care_serve.postprocess.detection import DETECTION_OUTPUT_NAMES, DETECTION_STRIDES

__all__ = [
    "DETECTION_OUTPUT_NAMES",
    "DETECTION_STRIDES",
    "CAREDetector",
    "DetectionHead",
    "detection_loss",
    "giou_loss",
    "quality_focal_loss",
]

DEFAULT_REGRESS_RANGES: tuple[tuple[float, float], ...] = ((0.0, 64.0), (64.0, 128.0), (128.0, 1e8))


# ---------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------


class DetectionHead(nn.Module):
    """Per-level towers of depthwise-separable units and one 1x1 predictor per level.

    Returns ``(cls_logits (B, N, K), box_ltrb (B, N, 4))`` with the levels'
    points concatenated fine to coarse, each map row-major.
    """

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        num_levels: int = 3,
        num_convs: int = 2,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.towers = nn.ModuleList(
            nn.Sequential(*[DepthwiseSeparable(in_chs, in_chs) for _ in range(num_convs)])
            for _ in range(num_levels)
        )
        preds = [nn.Conv2d(in_chs, num_classes + 4, 1) for _ in range(num_levels)]
        with torch.no_grad():
            for pred in preds:
                assert pred.bias is not None
                nn.init.normal_(pred.weight, std=0.01)
                pred.bias[:num_classes] = -math.log((1 - prior_prob) / prior_prob)
                # softplus(1.3) ~= 1.5 strides to each side: a small box around each point.
                pred.bias[num_classes:] = 1.3
        self.preds = nn.ModuleList(preds)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [
            pred(tower(f)).flatten(2)
            for tower, pred, f in zip(self.towers, self.preds, features, strict=True)
        ]
        out = torch.cat(outs, dim=2).transpose(1, 2)  # (B, N, K + 4)
        cls_logits, box_raw = out.split([self.num_classes, 4], dim=2)
        return cls_logits, F.softplus(box_raw)


# ---------------------------------------------------------------------------
# Losses and target assignment
# ---------------------------------------------------------------------------


def make_points_torch(
    input_hw: tuple[int, int], strides: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points ``(N, 2)``, their strides ``(N,)`` and level indices ``(N,)`` (as the numpy twin)."""
    points, point_strides, levels = [], [], []
    for level, s in enumerate(strides):
        h, w = input_hw[0] // s, input_hw[1] // s
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
        points.append((pts + 0.5) * s)
        point_strides.append(torch.full((h * w,), float(s), device=device))
        levels.append(torch.full((h * w,), level, device=device, dtype=torch.long))
    return torch.cat(points), torch.cat(point_strides), torch.cat(levels)


def decode_boxes_torch(
    box_ltrb: torch.Tensor, points: torch.Tensor, strides: torch.Tensor
) -> torch.Tensor:
    """Distances in stride units ``(..., N, 4)`` -> xyxy boxes in input pixels."""
    d = box_ltrb * strides[:, None]
    return torch.cat([points - d[..., :2], points + d[..., 2:]], dim=-1)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of matching rows of xyxy boxes ``a`` and ``b`` (both ``(n, 4)``)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_a + area_b - inter).clamp(min=1e-6)
    iou = inter / union
    enclose_wh = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0)
    enclose = (enclose_wh[:, 0] * enclose_wh[:, 1]).clamp(min=1e-6)
    return iou, iou - (enclose - union) / enclose


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - GIoU`` per row of xyxy boxes (unreduced)."""
    return 1.0 - paired_iou(pred, target)[1]


def quality_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """Quality focal loss (GFL): BCE to a soft target in ``[0, 1]`` scaled by ``|p - t|^beta``."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce * (p - target).abs().pow(beta)


@torch.no_grad()
def assign_targets(
    points: torch.Tensor,
    strides: torch.Tensor,
    levels: torch.Tensor,
    gt_boxes: torch.Tensor,
    regress_ranges: Sequence[tuple[float, float]],
    center_radius: float,
) -> torch.Tensor:
    """FCOS assignment with centre sampling: the matched ground-truth index per point, -1 if none.

    A point is a candidate for a box when it lies inside the box and within
    ``center_radius`` strides of the box centre, and its largest distance to the
    box's sides is inside its level's range. Among several candidates the
    smallest box wins. A box that gets no point (possible only for boxes
    smaller than a stride, or at a range boundary) takes its nearest point
    inside it, on the level whose range fits it best.
    """
    n, m = points.shape[0], gt_boxes.shape[0]
    if m == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device)
    px, py = points[:, 0:1], points[:, 1:2]  # (N, 1)
    x1, y1, x2, y2 = gt_boxes.unbind(dim=1)  # (M,)
    ltrb = torch.stack([px - x1, py - y1, x2 - px, y2 - py], dim=2)  # (N, M, 4)
    inside = ltrb.min(dim=2).values > 0
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    radius = strides[:, None] * center_radius
    near_centre = ((px - cx).abs() < radius) & ((py - cy).abs() < radius)
    ranges = torch.tensor(regress_ranges, device=points.device, dtype=points.dtype)[levels]
    max_reg = ltrb.max(dim=2).values
    in_range = (max_reg >= ranges[:, 0:1]) & (max_reg <= ranges[:, 1:2])
    area = ((x2 - x1) * (y2 - y1))[None, :].expand(n, m).clone()
    area[~(inside & near_centre & in_range)] = float("inf")
    min_area, matched = area.min(dim=1)
    matched[torch.isinf(min_area)] = -1
    # Fallback: every box gets at least one point.
    has_point = torch.zeros(m, dtype=torch.bool, device=points.device)
    has_point[matched[matched >= 0]] = True
    for j in torch.nonzero(~has_point).flatten().tolist():
        half = torch.max(x2[j] - x1[j], y2[j] - y1[j]) / 2
        fit = ((ranges[:, 0] <= half) & (half <= ranges[:, 1])) | (levels == levels.max())
        dist = (px[:, 0] - cx[j]).abs() + (py[:, 0] - cy[j]).abs()
        dist = torch.where(fit & (matched < 0), dist, torch.full_like(dist, float("inf")))
        best = int(dist.argmin())
        if torch.isfinite(dist[best]):
            matched[best] = j
    return matched


def detection_loss(
    cls_logits: torch.Tensor,
    box_ltrb: torch.Tensor,
    targets: Sequence[dict[str, torch.Tensor]],
    input_hw: tuple[int, int],
    *,
    strides: Sequence[int] = DETECTION_STRIDES,
    regress_ranges: Sequence[tuple[float, float]] = DEFAULT_REGRESS_RANGES,
    center_radius: float = 2.5,
    box_weight: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Quality focal + GIoU loss of a batch; see the module docstring for ``targets``.

    Returns ``loss`` (the total, to backpropagate), ``loss_cls``, ``loss_box``
    and ``num_pos`` (assigned points in the batch, a float tensor). Both terms
    are normalised by the number of positives (at least 1).
    """
    batch, n, num_classes = cls_logits.shape
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
    points, point_strides, levels = make_points_torch(input_hw, strides, cls_logits.device)
    if points.shape[0] != n:
        raise ValueError(
            f"outputs have {n} points but a {input_hw[1]}x{input_hw[0]} input has {points.shape[0]}"
        )
    boxes = decode_boxes_torch(box_ltrb, points, point_strides)  # (B, N, 4)
    cls_target = torch.zeros_like(cls_logits)
    pos_pred, pos_gt = [], []
    for b, target in enumerate(targets):
        gt_boxes = target["boxes"].to(cls_logits.device, torch.float32).reshape(-1, 4)
        labels = target["labels"].to(cls_logits.device, torch.long).reshape(-1)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got {labels.tolist()}")
        matched = assign_targets(
            points, point_strides, levels, gt_boxes, regress_ranges, center_radius
        )
        pos = torch.nonzero(matched >= 0).flatten()
        if pos.numel() == 0:
            continue
        gt = gt_boxes[matched[pos]]
        pred = boxes[b, pos]
        iou = paired_iou(pred.detach(), gt)[0].clamp(min=0)
        cls_target[b, pos, labels[matched[pos]]] = iou
        pos_pred.append(pred)
        pos_gt.append(gt)
    num_pos = torch.tensor(float(sum(p.shape[0] for p in pos_pred)), device=cls_logits.device)
    norm = num_pos.clamp(min=1.0)
    loss_cls = quality_focal_loss(cls_logits, cls_target).sum() / norm
    if pos_pred:
        loss_box = giou_loss(torch.cat(pos_pred), torch.cat(pos_gt)).sum() / norm
    else:
        loss_box = box_ltrb.sum() * 0.0
    return {
        "loss": loss_cls + box_weight * loss_box,
        "loss_cls": loss_cls.detach(),
        "loss_box": loss_box.detach(),
        "num_pos": num_pos,
    }


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


class CAREDetector(nn.Module):
    """CARE backbone + FPN + light anchor-free head; see the module docstring.

    Args:
        variant: CARE variant of the backbone (``care_tiny``, ``care_s0``, ...).
        num_classes: number of object classes (no background class).
        backbone_checkpoint: optional official ImageNet checkpoint for the backbone.
        neck_chs: channels of the pyramid and the head; default: the backbone's
            stride-8 width (32 for care_tiny, 64 for care_s0/s1/s2).
        head_convs: depthwise-separable units per head tower.
        regress_ranges: per level, the range of a point's largest side distance
            it is trained to predict (FCOS).
        center_radius: centre-sampling radius in strides.
    """

    output_names = DETECTION_OUTPUT_NAMES
    strides = DETECTION_STRIDES

    def __init__(
        self,
        variant: str = "care_tiny",
        num_classes: int = 80,
        *,
        backbone_checkpoint: str | os.PathLike[str] | None = None,
        neck_chs: int | None = None,
        head_convs: int = 2,
        regress_ranges: Sequence[tuple[float, float]] = DEFAULT_REGRESS_RANGES,
        center_radius: float = 2.5,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if len(regress_ranges) != len(self.strides):
            raise ValueError(f"regress_ranges needs {len(self.strides)} (low, high) pairs")
        self.num_classes = num_classes
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in regress_ranges)
        self.center_radius = center_radius
        self.backbone = build_backbone(variant, backbone_checkpoint)
        self.pretrained_cfg = self.backbone.pretrained_cfg
        in_chs = backbone_channels(self.backbone.feature_info, self.strides)
        neck_chs = neck_chs or in_chs[0]
        self.init_kwargs: dict[str, Any] = {
            "variant": variant,
            "num_classes": num_classes,
            "neck_chs": neck_chs,
            "head_convs": head_convs,
            "regress_ranges": [list(r) for r in self.regress_ranges],
            "center_radius": center_radius,
        }
        self.neck = FPN(in_chs, neck_chs)
        self.head = DetectionHead(neck_chs, num_classes, len(self.strides), head_convs)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pyramid maps at strides 8, 16, 32 (``neck_chs`` channels each)."""
        return self.neck(self.backbone.forward_intermediates(x)[1:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls_logits (B, N, K), box_ltrb (B, N, 4))`` for input ``B x 3 x H x W``."""
        return self.head(self.forward_features(x))

    def loss(
        self,
        outputs: tuple[torch.Tensor, torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]],
        input_hw: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """``detection_loss`` with this network's strides, ranges and radius."""
        return detection_loss(
            outputs[0],
            outputs[1],
            targets,
            input_hw,
            strides=self.strides,
            regress_ranges=self.regress_ranges,
            center_radius=self.center_radius,
        )

    def forward_loss(
        self, images: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Forward ``images`` and return the loss dict (call ``.train()`` first to train)."""
        return self.loss(self(images), targets, (int(images.shape[-2]), int(images.shape[-1])))
