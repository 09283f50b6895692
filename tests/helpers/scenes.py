"""Synthetic camera scenes the bundled shape models get right, as frames, JPEGs and videos.

``SCENES`` holds four 640x480 RGB scenes on plain backgrounds with large filled shapes
(verified against ``shapes-detector`` and ``shapes-classifier``, also after H.264 and JPEG
compression, by ``tests/integration/test_stream_parts.py``):

- ``trio``: a red circle, a blue square and a green triangle on light grey;
- ``pair``: a yellow triangle and a magenta circle on dark slate;
- ``single``: one large orange square on pale blue;
- ``empty``: plain beige, no object.

``write_video`` holds each scene for ``hold`` frames at ``fps`` (so a camera "sees" one
scene after another); ``match_scene`` tells which scene a decoded frame shows;
``ShapeModels`` answers frames with the bundled packages exactly as the server does.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.video import write_frames
from care_serve.postprocess.detection import box_iou as pairwise_iou
from care_serve.serving.pipelines import crop_boxes
from care_serve.store.pipelines import CropSpec
from tests.helpers.paths import BUNDLED_STORE

__all__ = [
    "HEIGHT",
    "SCENES",
    "WIDTH",
    "ExpectedObject",
    "ShapeModels",
    "ShapeScene",
    "box_iou",
    "jpeg_bytes",
    "match_scene",
    "scene_frames",
    "write_frames",
    "write_video",
]

WIDTH, HEIGHT = 640, 480
Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ExpectedObject:
    """One drawn shape: its label and pixel box ``(x1, y1, x2, y2)`` (x2, y2 exclusive)."""

    label: str
    box: Box


@dataclass(frozen=True)
class ShapeScene:
    """A scene: name, frame (H, W, 3) RGB uint8 and the objects drawn in it."""

    name: str
    frame: np.ndarray
    objects: tuple[ExpectedObject, ...]

    @property
    def labels(self) -> list[str]:
        """The expected labels, sorted."""
        return sorted(o.label for o in self.objects)

    def jpeg(self, quality: int = 90) -> bytes:
        """The frame as JPEG bytes."""
        return jpeg_bytes(self.frame, quality)

    def png(self) -> bytes:
        """The frame as PNG bytes."""
        buffer = io.BytesIO()
        Image.fromarray(self.frame).save(buffer, format="PNG")
        return buffer.getvalue()


def _draw(
    name: str, background: RGB, shapes: Sequence[tuple[str, RGB, tuple[int, int], int]]
) -> ShapeScene:
    """Draw ``(label, colour, centre, size)`` shapes; boxes are the painted extents."""
    image = Image.new("RGB", (WIDTH, HEIGHT), background)
    objects = []
    for label, colour, (cx, cy), size in shapes:
        layer = Image.new("L", (WIDTH, HEIGHT), 0)
        draw = ImageDraw.Draw(layer)
        half = size / 2
        if label == "circle":
            draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=255)
        elif label == "square":
            draw.rectangle((cx - half, cy - half, cx + half - 1, cy + half - 1), fill=255)
        else:  # a triangle pointing up, slightly turned
            angles = [math.radians(a) for a in (-80.0, 40.0, 160.0)]
            draw.polygon([(cx + half * math.cos(a), cy + half * math.sin(a)) for a in angles], 255)
        mask = np.asarray(layer) > 0
        image.paste(colour, mask=layer)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        objects.append(ExpectedObject(label, box))
    frame = np.asarray(image, np.uint8)
    frame.setflags(write=False)
    return ShapeScene(name, frame, tuple(objects))


def _make_scenes() -> tuple[ShapeScene, ...]:
    return (
        _draw(
            "trio",
            (200, 200, 200),
            [
                ("circle", (220, 30, 30), (130, 150), 150),
                ("square", (30, 50, 200), (470, 140), 140),
                ("triangle", (20, 150, 40), (320, 350), 170),
            ],
        ),
        _draw(
            "pair",
            (50, 60, 70),
            [
                ("triangle", (240, 220, 40), (190, 250), 200),
                ("circle", (230, 60, 220), (470, 230), 170),
            ],
        ),
        _draw("single", (170, 200, 240), [("square", (240, 130, 20), (330, 240), 220)]),
        _draw("empty", (225, 210, 180), []),
    )


SCENES: tuple[ShapeScene, ...] = _make_scenes()


def jpeg_bytes(frame: np.ndarray, quality: int = 90) -> bytes:
    """``frame`` (H, W, 3) RGB uint8 as baseline 4:2:0 JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scene_frames(
    scenes: Sequence[ShapeScene] = SCENES, hold: int = 10, repeat: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """``(scene index, frame)``: each scene ``hold`` times in order, all of it ``repeat`` times."""
    for _ in range(repeat):
        for index, scene in enumerate(scenes):
            for _ in range(hold):
                yield index, scene.frame


def write_video(
    path: str | Path,
    scenes: Sequence[ShapeScene] = SCENES,
    fps: int = 10,
    hold: int = 10,
    repeat: int = 1,
    codec: Literal["h264", "mjpeg"] = "h264",
) -> Path:
    """Write the scenes, each held ``hold`` frames, ``repeat`` times, at ``fps`` with PyAV.

    ``h264`` is libx264 (yuv420p, a keyframe every second, no B-frames) and suits ``.mkv``
    or ``.mp4``; ``mjpeg`` (yuvj420p) suits ``.mkv`` or ``.avi``. Returns ``path``.
    """
    frames = (frame for _, frame in scene_frames(scenes, hold, repeat))
    return write_frames(path, frames, fps, codec)


def match_scene(frame: np.ndarray, scenes: Sequence[ShapeScene] = SCENES) -> tuple[int, float]:
    """``(index of the scene frame looks most like, mean absolute difference 0-255)``.

    A decoded frame of the scene differs by a few units (compression); another scene by tens.
    """
    frame = np.asarray(frame)
    height, width = scenes[0].frame.shape[:2]
    if frame.shape[:2] != (height, width):
        frame = np.asarray(Image.fromarray(frame[..., :3]).resize((width, height)))
    diffs = [float(np.abs(frame[..., :3].astype(np.int16) - s.frame).mean()) for s in scenes]
    best = int(np.argmin(diffs))
    return best, diffs[best]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (the server's ``box_iou``)."""
    return float(pairwise_iou([a], [b])[0, 0])


class ShapeModels:
    """``shapes-detector`` and ``shapes-classifier`` of the bundled store, run as the server does
    (``PackageRunner``: decode, the task's preprocessing, ONNX Runtime, postprocessing)."""

    def __init__(self, store: Path = BUNDLED_STORE, threads: int = 1) -> None:
        from care_serve.offline.evaluation.runner import PackageRunner

        self.detector = PackageRunner(store / "shapes-detector" / "1", threads)
        self.classifier = PackageRunner(store / "shapes-classifier" / "1", threads)

    def _answer(self, runner: Any, image: np.ndarray, params: dict[str, Any]) -> Any:
        from care_serve.imaging.decode import decode_image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        decoded = decode_image(buffer.getvalue(), max_bytes=1 << 28, max_pixels=1 << 28)
        array, meta = runner.task.preprocess(decoded)
        outputs = runner.backend.run(array[None].astype(np.float32, copy=False))
        parsed = runner.task.parse_params(params)
        return runner.task.postprocess({k: v[0] for k, v in outputs.items()}, meta, parsed)

    def detect(self, frame: np.ndarray) -> list[tuple[str, float, tuple[float, ...]]]:
        """``(label, score, box)`` of each detection at the manifest's threshold, best first."""
        result = self._answer(self.detector, frame, {})
        return [(d.label, d.score, tuple(d.box)) for d in result.detections]

    def classify(self, image: np.ndarray) -> tuple[str, float]:
        """``(label, probability)`` of the top class of ``image`` (a crop, say)."""
        result = self._answer(self.classifier, image, {"top_k": 1})
        top = result.predictions[0]
        return top.label, top.probability

    def problems(
        self,
        frame: np.ndarray,
        scene: ShapeScene,
        min_score: float = 0.6,
        min_iou: float = 0.7,
        min_probability: float = 0.8,
        pad: float = 0.15,
    ) -> list[str]:
        """What the models get wrong on ``frame`` showing ``scene`` (empty when all is right):
        one detection per expected object (same label, score and IoU at least the minimums),
        no other detection, and the classifier names each detection's crop (its box grown by
        ``pad`` on each side) with at least ``min_probability``."""
        found = []
        detections = self.detect(frame)
        unmatched = list(detections)
        for obj in scene.objects:
            best = max(unmatched, key=lambda d: box_iou(obj.box, d[2]), default=None)
            if best is None or box_iou(obj.box, best[2]) < min_iou:
                found.append(f"{scene.name}: {obj.label} at {obj.box} not detected")
                continue
            unmatched.remove(best)
            if best[0] != obj.label or best[1] < min_score:
                found.append(f"{scene.name}: {obj.label} at {obj.box} detected as {best[:2]}")
        found += [f"{scene.name}: unexpected detection {d}" for d in unmatched]
        crops = CropSpec(padding=pad, min_size=1, max_boxes=64)
        for label, _, box in detections:
            _, (crop,) = crop_boxes(frame, [box], crops)  # as the pipelines crop
            name, probability = self.classify(crop.pixels)
            if name != label or probability < min_probability:
                found.append(f"{scene.name}: crop of {label} classified {name} {probability:.2f}")
        return found

    def close(self) -> None:
        """Release both backends."""
        self.detector.close()
        self.classifier.close()

    def __enter__(self) -> ShapeModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
