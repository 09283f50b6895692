"""Detection post-processing in numpy: decode, score threshold, top-k, NMS.

NMS is class-aware (boxes of different classes never suppress each other) or,
for models whose classes are mutually exclusive in space, class-agnostic (any
box suppresses any lower-scoring box it overlaps, whatever the classes).

Shared by the torch and onnxruntime backends (no torch import). The network
(``care_serve.models.detection.CAREDetector``) outputs, for an input ``B x 3 x H x W``:

- ``cls_logits``: ``(B, N, K)`` float32 class logits (score = sigmoid, one-vs-all,
  no background class);
- ``box_ltrb``: ``(B, N, 4)`` float32 non-negative distances from each point to
  the box's left, top, right and bottom sides, in units of the point's stride.

``N = sum(H/s * W/s for s in DETECTION_STRIDES)``: the points of the stride-8
map first, then 16, then 32, each map row-major; the point of cell ``(i, j)`` at
stride ``s`` is ``((j + 0.5) s, (i + 0.5) s)`` in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from care_serve.errors import InvalidInput
from care_serve.imaging.letterbox import LetterboxMeta

__all__ = [
    "DETECTION_OUTPUT_NAMES",
    "DETECTION_STRIDES",
    "Detections",
    "batched_nms",
    "box_iou",
    "decode_boxes",
    "make_points",
    "nms",
    "postprocess_detections",
]

DETECTION_OUTPUT_NAMES = ("cls_logits", "box_ltrb")
DETECTION_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` (n, 4) xyxy, ``scores`` (n,), ``class_ids`` (n,)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def make_points(
    input_height: int, input_width: int, strides: Sequence[int] = DETECTION_STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """Point centres ``(N, 2)`` (x, y) in input pixels and their strides ``(N,)``."""
    points, point_strides = [], []
    for s in strides:
        h, w = input_height // s, input_width // s
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        points.append((pts + 0.5) * s)
        point_strides.append(np.full(h * w, s, np.float32))
    return np.concatenate(points), np.concatenate(point_strides)


def decode_boxes(box_ltrb: np.ndarray, points: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """``(N, 4)`` distances in stride units -> ``(N, 4)`` xyxy boxes in input pixels."""
    d = box_ltrb * strides[:, None]
    return np.concatenate([points - d[:, :2], points + d[:, 2:]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(n, m)`` of xyxy boxes ``a (n, 4)`` and ``b (m, 4)`` (continuous
    coordinates, no +1; any array-like, empty included)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is greater
    than ``iou_threshold``. The boxes are sorted once; each kept box is then
    compared with all lower-scoring ones in one vector operation on contiguous
    slices (no gathers). Stops after ``max_keep`` boxes.
    """
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes, np.float64)[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    limit = len(order) if max_keep is None else max_keep
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        j = slice(i + 1, None)
        w = np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j])
        h = np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = areas[i] + areas[j] - inter
        # iou > thr  <=>  inter > thr * union (for union > 0; empty unions never suppress).
        suppressed[j] |= (inter > iou_threshold * union) & (union > 0)
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Shifts each class's boxes by a class-dependent offset larger than any
    coordinate span, so one NMS pass equals one NMS per class.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    b = boxes.astype(np.float64)
    span = float(b.max() - b.min()) + 1.0
    shifted = b - b.min() + class_ids.astype(np.float64)[:, None] * span
    return nms(shifted, scores, iou_threshold, max_keep)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free


def _check_params(
    score_threshold: float, iou_threshold: float, max_detections: int, pre_nms_top_k: int
) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise InvalidInput(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise InvalidInput(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not isinstance(max_detections, (int, np.integer)) or max_detections < 1:
        raise InvalidInput(f"max_detections must be a positive integer, got {max_detections!r}")
    if not isinstance(pre_nms_top_k, (int, np.integer)) or pre_nms_top_k < 1:
        raise InvalidInput(f"pre_nms_top_k must be a positive integer, got {pre_nms_top_k!r}")


def postprocess_detections(
    cls_logits: np.ndarray,
    box_ltrb: np.ndarray,
    meta: LetterboxMeta,
    *,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
    pre_nms_top_k: int = 1000,
    strides: Sequence[int] = DETECTION_STRIDES,
    class_agnostic: bool = False,
) -> Detections:
    """One image's raw outputs ``(N, K)`` and ``(N, 4)`` -> detections in original pixels.

    Steps: sigmoid scores; keep (point, class) pairs scoring at least
    ``score_threshold``; the ``pre_nms_top_k`` best; decode; clip to the image's
    region of the input, dropping boxes that become empty; NMS (class-aware, or
    over all classes at once with ``class_agnostic``, so one object answers one
    box whatever the classes its points score); at most ``max_detections``,
    best first; map through ``meta`` to the pixels of the image the client sent.
    """
    _check_params(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
    points, point_strides = make_points(meta.input_height, meta.input_width, strides)
    if cls_logits.ndim != 2 or box_ltrb.shape != (points.shape[0], 4):
        raise ValueError(
            f"expected cls_logits (N, K) and box_ltrb (N, 4) with N={points.shape[0]} for a "
            f"{meta.input_width}x{meta.input_height} input; "
            f"got {cls_logits.shape} and {box_ltrb.shape}"
        )
    if cls_logits.shape[0] != points.shape[0]:
        raise ValueError(f"cls_logits has {cls_logits.shape[0]} points, expected {points.shape[0]}")
    scores = _sigmoid(cls_logits.astype(np.float32))
    point_idx, class_ids = np.nonzero(scores >= score_threshold)
    cand_scores = scores[point_idx, class_ids]
    if cand_scores.size > pre_nms_top_k:
        top = np.argpartition(-cand_scores, pre_nms_top_k - 1)[:pre_nms_top_k]
        point_idx, class_ids, cand_scores = point_idx[top], class_ids[top], cand_scores[top]
    boxes = decode_boxes(
        box_ltrb[point_idx].astype(np.float32), points[point_idx], point_strides[point_idx]
    )
    # Clip to the image's region of the input (not the padding); drop empty boxes.
    x0, y0, x1, y1 = meta.content_box()
    np.clip(boxes[:, 0::2], x0, x1, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], y0, y1, out=boxes[:, 1::2])
    valid = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
    boxes, cand_scores, class_ids = boxes[valid], cand_scores[valid], class_ids[valid]
    if class_agnostic:
        keep = nms(boxes, cand_scores, iou_threshold, max_detections)
    else:
        keep = batched_nms(boxes, cand_scores, class_ids, iou_threshold, max_detections)
    return Detections(
        boxes=meta.boxes_to_original(boxes[keep]).astype(np.float32),
        scores=cand_scores[keep].astype(np.float32),
        class_ids=class_ids[keep].astype(np.int64),
    )
