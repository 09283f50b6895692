"""What every framework peer runs per image: decode, preprocess, onnxruntime, postprocess.

numpy, Pillow and onnxruntime only (no care-serve import), so it loads in every
framework's venv; the harness checks it against care-serve's own preprocessing
before a run (``benchmarks.peers.workloads.check_pipeline``). The settings come
from a JSON file the harness writes from the care-serve package's manifest
(``PEER_CONFIG``):

- classification: resize the shorter side to ``resize_short_side`` (bicubic),
  centre crop, ``(x / 255 - mean) / std``, softmax top 5;
- detection: letterbox (aspect kept, bilinear with Pillow's ``reducing_gap=3``, padded
  with the mean, i.e. 0 after normalising), sigmoid scores over the threshold, the
  best ``pre_nms_top_k``, decode at the point strides, clip to the image, NMS, boxes
  mapped back to the pixels sent;
- one ``InferenceSession`` with ``threads`` intra-op threads (2), batch of any size.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

__all__ = ["Geometry", "Pipeline"]

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Geometry:
    """Where the image sits in the network input (letterbox; unused for classification)."""

    width: int
    height: int
    resized_width: int
    resized_height: int
    left: int
    top: int


class Pipeline:
    """The model and its pre- and postprocessing, from the harness's JSON settings."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.task: str = config["task"]
        self.height, self.width = (int(v) for v in config["input"])
        self.resample = RESAMPLE[config["interpolation"]]
        self.mean = np.asarray(config["mean"], np.float32)
        self.std = np.asarray(config["std"], np.float32)
        self.labels: list[str] = list(config["labels"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(config.get("threads", 2))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            config["onnx"], sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        if self.task == "detection":
            self.points, self.point_strides = _points(
                self.height, self.width, config["detection"]["strides"]
            )

    @classmethod
    def from_env(cls) -> Pipeline:
        with open(os.environ["PEER_CONFIG"]) as handle:
            return cls(json.load(handle))

    # -- per image ----------------------------------------------------------------------
    @staticmethod
    def decode(data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data)).convert("RGB")

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, Geometry]:
        """RGB image -> ``(3, H, W)`` float32 input and where the image is in it."""
        w, h = image.size
        if self.task == "classification":
            short = int(self.config["resize_short_side"])
            rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            top, left = round((rh - self.height) / 2.0), round((rw - self.width) / 2.0)
            canvas = image.resize((rw, rh), self.resample).crop(
                (left, top, left + self.width, top + self.height)
            )
            pixels = np.asarray(canvas, np.float32)
            return self._normalise(pixels), Geometry(w, h, rw, rh, -left, -top)
        scale = min(self.width / w, self.height / h)
        rw = min(self.width, max(1, round(w * scale)))
        rh = min(self.height, max(1, round(h * scale)))
        left, top = (self.width - rw) // 2, (self.height - rh) // 2
        resized = np.asarray(image.resize((rw, rh), self.resample, reducing_gap=3.0), np.float32)
        out = np.zeros((3, self.height, self.width), np.float32)
        out[:, top : top + rh, left : left + rw] = self._normalise(resized)
        return out, Geometry(w, h, rw, rh, left, top)

    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        chw = pixels.transpose(2, 0, 1) / np.float32(255.0)
        return np.ascontiguousarray((chw - self.mean[:, None, None]) / self.std[:, None, None])

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """The model on a ``(B, 3, H, W)`` batch: its outputs, batch first."""
        outputs: list[np.ndarray] = self.session.run(None, {self.input_name: batch})
        return outputs

    def postprocess(
        self, outputs: Sequence[np.ndarray], row: int, geometry: Geometry
    ) -> dict[str, Any]:
        """Row ``row`` of a batch's outputs -> the JSON answer (top 5, or detections)."""
        if self.task == "classification":
            return _top5(outputs[0][row], self.labels)
        return self._detections(outputs[0][row], outputs[1][row], geometry)

    # -- whole requests -------------------------------------------------------------------
    def predict(self, images: Sequence[bytes | Image.Image]) -> list[dict[str, Any]]:
        """Decode (bytes) and preprocess each image, run them as one batch, answer each."""
        prepared = [
            self.preprocess(self.decode(item) if isinstance(item, bytes) else item.convert("RGB"))
            for item in images
        ]
        outputs = self.infer(np.stack([array for array, _ in prepared]))
        return [self.postprocess(outputs, i, geo) for i, (_, geo) in enumerate(prepared)]

    def predict_one(self, data: bytes) -> dict[str, Any]:
        return self.predict([data])[0]

    def _detections(
        self, cls_logits: np.ndarray, box_ltrb: np.ndarray, geo: Geometry
    ) -> dict[str, Any]:
        det = self.config["detection"]
        scores = 0.5 * (np.tanh(0.5 * cls_logits.astype(np.float32)) + 1.0)
        point, cls = np.nonzero(scores >= det["score_threshold"])
        best = scores[point, cls]
        top_k = int(det["pre_nms_top_k"])
        if best.size > top_k:
            keep = np.argpartition(-best, top_k - 1)[:top_k]
            point, cls, best = point[keep], cls[keep], best[keep]
        dist = box_ltrb[point].astype(np.float32) * self.point_strides[point, None]
        centre = self.points[point]
        boxes = np.concatenate([centre - dist[:, :2], centre + dist[:, 2:]], axis=1)
        right, bottom = geo.left + geo.resized_width, geo.top + geo.resized_height
        np.clip(boxes[:, 0::2], geo.left, right, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], geo.top, bottom, out=boxes[:, 1::2])
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, best, cls = boxes[valid], best[valid], cls[valid]
        if not det["class_agnostic_nms"] and len(boxes):
            span = float(boxes.max() - boxes.min()) + 1.0
            kept = _nms(
                boxes + cls[:, None] * span, best, det["nms_iou"], int(det["max_detections"])
            )
        else:
            kept = _nms(boxes, best, det["nms_iou"], int(det["max_detections"]))
        sx, sy = geo.resized_width / geo.width, geo.resized_height / geo.height
        out = boxes[kept] - np.asarray([geo.left, geo.top, geo.left, geo.top], np.float32)
        out /= np.asarray([sx, sy, sx, sy], np.float32)
        return {
            "detections": [
                {"label": self.labels[c], "class_id": int(c), "score": float(s), "box": b}
                for b, s, c in zip(
                    out.tolist(), best[kept].tolist(), cls[kept].tolist(), strict=True
                )
            ]
        }


def _points(height: int, width: int, strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Point centres (x, y) in input pixels, stride 8 map first, each row-major."""
    points, point_strides = [], []
    for s in strides:
        ys, xs = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        points.append((np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * s)
        point_strides.append(np.full(xs.size, s, np.float32))
    return np.concatenate(points), np.concatenate(point_strides)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        union = area[i] + area[rest] - inter
        order = rest[~((inter > iou * union) & (union > 0))]
    return np.asarray(keep, np.int64)


def _top5(logits: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    z = np.asarray(logits, np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    best = np.argsort(-p)[:5]
    return {
        "predictions": [
            {"label": labels[i], "class_id": int(i), "probability": float(p[i])} for i in best
        ]
    }
