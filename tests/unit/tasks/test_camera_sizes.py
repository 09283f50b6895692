"""Camera-size images on the fast path (``reduced_decode``) and on the exact path.

The exact path must be the offline preprocessing of the full-resolution image bit
for bit; the fast path must stay close to it and answer in the pixels sent.
Random images are fresh on every run (the seed is in the failure message); the
scenes whose answers are checked are fixed.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from care_serve.backends import load_backend
from care_serve.imaging.decode import DECODE_SLACK, ImageProbe, probe_image
from care_serve.imaging.letterbox import preprocess as letterbox_preprocess
from care_serve.offline.data.synthetic import scene_rng
from care_serve.offline.data.wide import WideSpec, make_wide_scene
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.store.package import read_labels, read_manifest
from care_serve.tasks import get_task_class
from care_serve.tasks.base import Task
from tests.helpers.numerics import rel_error
from tests.helpers.paths import BUNDLED_STORE

PACKAGES = {
    "classification": BUNDLED_STORE / "shapes-classifier" / "1",
    "detection": BUNDLED_STORE / "shapes-detector" / "1",
    "segmentation": BUNDLED_STORE / "shapes-segmenter" / "1",
}
CAMERA_SIZES = [(1920, 1080), (1600, 1200), (1080, 1920)]
# Pillow's own bomb guard may have been lowered by an earlier test (probe_image checks the limit).
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def make_task(kind: str, fast: bool, manifest: Manifest | None = None, **settings: Any) -> Task:
    package = PACKAGES[kind]
    manifest = manifest or read_manifest(package)
    options: dict[str, Any] = {"models": [], "reduced_decode": fast, **settings}
    task = get_task_class(manifest.task)(
        manifest, read_labels(package, manifest), Settings(model_store=BUNDLED_STORE, **options)
    )
    return task


def photo_jpeg(width: int, height: int, seed: int, exif: Image.Exif | None = None) -> bytes:
    """A random photo-like JPEG: smooth colour fields, edges and sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 60), max(2, width // 60), 3), np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    pixels = smooth.astype(np.float32) + rng.normal(0.0, 5.0, smooth.shape)
    pixels[rng.random((height, width)) < 0.001] = 255.0  # some sharp detail
    buf = io.BytesIO()
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(buf, "JPEG", quality=90, **({"exif": exif.tobytes()} if exif else {}))
    return buf.getvalue()


def probe(data: bytes) -> ImageProbe:
    return probe_image(data, max_bytes=10**8, max_pixels=10**8)


def prepared(task: Task, data: bytes) -> tuple[np.ndarray, Any, Any]:
    image = task.decode(probe(data))
    array, meta = task.preprocess(image)
    return array, meta, image


def reference_classifier_input(image: Image.Image, manifest: Manifest) -> np.ndarray:
    """The timm/torchvision eval transform written out with Pillow and float32 numpy."""
    pre = manifest.preprocessing
    out_w, out_h = manifest.input.width, manifest.input.height
    w, h = image.size
    resample = Image.Resampling.BILINEAR
    if pre.mode == "center_crop":
        short = manifest.resize_short_side
        rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        left, top = round((rw - out_w) / 2.0), round((rh - out_h) / 2.0)
        canvas = image.resize((rw, rh), resample).crop((left, top, left + out_w, top + out_h))
    elif pre.mode == "resize":
        canvas = image.resize((out_w, out_h), resample)
    else:
        scale = min(out_w / w, out_h / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (out_w, out_h), (pre.pad_value,) * 3)
        canvas.paste(image.resize((nw, nh), resample), ((out_w - nw) // 2, (out_h - nh) // 2))
    scaled: np.ndarray = np.asarray(canvas, np.float32) / np.float32(255.0)
    x: np.ndarray = (scaled - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# -- exact -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["letterbox", "center_crop", "resize"])
@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (333, 777)])
def test_exact_classifier_input_is_the_full_resolution_transform_bit_for_bit(
    mode: str, size: tuple[int, int]
) -> None:
    seed = secrets.randbits(32)
    base = read_manifest(PACKAGES["classification"])
    pre = base.preprocessing.model_copy(update={"mode": mode})
    manifest = base.model_copy(update={"preprocessing": pre})
    data = photo_jpeg(*size, seed)
    array, meta, decoded = prepared(make_task("classification", False, manifest), data)
    assert decoded.image.size == size  # full resolution
    full = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(array, reference_classifier_input(full, manifest)), seed
    assert (meta.orig_width, meta.orig_height) == size


@pytest.mark.parametrize("kind", ["detection", "segmentation"])
@pytest.mark.parametrize("size", CAMERA_SIZES)
def test_exact_dense_input_is_the_training_letterbox_bit_for_bit(
    kind: str, size: tuple[int, int]
) -> None:
    seed = secrets.randbits(32)
    task = make_task(kind, False)
    data = photo_jpeg(*size, seed)
    array, meta, decoded = prepared(task, data)
    assert decoded.image.size == size
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    ref, lb = letterbox_preprocess(full, (task.manifest.input.width, task.manifest.input.height))
    assert np.array_equal(array, ref), seed
    assert meta.letterbox == lb


# -- fast --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["classification", "detection", "segmentation"])
@pytest.mark.parametrize("size", CAMERA_SIZES)
def test_fast_input_is_close_to_exact_with_the_same_geometry(
    kind: str, size: tuple[int, int]
) -> None:
    seed = secrets.randbits(32)
    data = photo_jpeg(*size, seed)
    fast, fast_meta, decoded = prepared(make_task(kind, True), data)
    exact, exact_meta, _ = prepared(make_task(kind, False), data)
    assert decoded.image.width < size[0] and decoded.image.height < size[1]  # reduced scale
    assert (decoded.width, decoded.height) == size
    assert fast.shape == exact.shape
    assert rel_error(fast, exact) < 0.03, seed
    # Same geometry: the meta maps to the pixels sent on both paths.
    for field in ("orig_width", "orig_height", "scale_x", "scale_y", "offset_x", "offset_y"):
        assert getattr(fast_meta, field) == getattr(exact_meta, field), field
    if kind != "classification":
        assert fast_meta.letterbox == exact_meta.letterbox


def test_dense_decode_size_is_the_letterboxed_size_within_the_slack() -> None:
    task = make_task("detection", True)
    assert task.decode_size(1920, 1080) == (512, 288)
    image = task.decode(probe(photo_jpeg(1920, 1080, 1)))
    assert image.image.size == (480, 270)  # 1/4: 0.94 of 512 x 288, within DECODE_SLACK
    assert DECODE_SLACK * 512 <= 480
    # 1/4 of 1280 x 720 would be 0.62 of what the letterbox needs: 1/2, never less
    assert task.decode(probe(photo_jpeg(1280, 720, 1))).image.size == (640, 360)
    assert task.decode(probe(photo_jpeg(600, 400, 1))).image.size == (600, 400)


def test_fast_path_keeps_exif_orientation_and_the_sent_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise: displayed 1080 x 1920
    data = photo_jpeg(1920, 1080, secrets.randbits(32), exif)
    for kind in ("classification", "detection"):
        array, meta, decoded = prepared(make_task(kind, True), data)
        assert (decoded.width, decoded.height) == (1080, 1920)
        assert decoded.image.size == (270, 480)  # 1/4 for both (the detector within the slack)
        assert (meta.orig_width, meta.orig_height) == (1080, 1920)
        exact, _, _ = prepared(make_task(kind, False), data)
        assert rel_error(array, exact) < 0.03


# -- answers in the pixels sent ------------------------------------------------------------------
def _scene_jpeg(kind: str, index: int) -> tuple[bytes, Any]:
    """A fixed scene (the answers are compared with the model's, which has its errors)."""
    spec = WideSpec(min_side=1080, min_long=1600, max_side=2400, max_aspect=16 / 9)
    scene = make_wide_scene(scene_rng(7, kind, index), None, spec)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, "JPEG", quality=90)
    return buf.getvalue(), scene


def _answer(task: Task, backend: Any, data: bytes, params: dict[str, Any]) -> Any:
    array, meta, _ = prepared(task, data)
    outputs = {k: v[0] for k, v in backend.run(array[None]).items()}
    return task.postprocess(outputs, meta, task.parse_params(params))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def test_fast_detection_boxes_are_in_the_pixels_sent(tmp_path: Path) -> None:
    exact, fast = make_task("detection", False), make_task("detection", True)
    backend = load_backend(PACKAGES["detection"], exact.manifest, 1, "auto")
    try:
        for index in range(2):
            data, scene = _scene_jpeg("detection", index)
            height, width = scene.mask.shape
            got = _answer(fast, backend, data, {"return_overlay": True})
            ref = _answer(exact, backend, data, {})
            boxes = np.asarray([d.box for d in got.detections]).reshape(-1, 4)
            assert np.all(boxes[:, 0::2] <= width) and np.all(boxes[:, 1::2] <= height)
            assert [d.class_id for d in got.detections] == [d.class_id for d in ref.detections]
            for a, b in zip(got.detections, ref.detections, strict=True):
                assert _iou(np.asarray(a.box), np.asarray(b.box)) > 0.9
            for shape in scene.shapes:  # every shape is found where it was drawn
                truth = np.asarray(shape.box, np.float64)
                assert max((_iou(b, truth) for b in boxes), default=0.0) > 0.5, shape
            assert got.overlay_png is not None
            overlay = Image.open(io.BytesIO(got.overlay_png))
            assert overlay.width < width  # drawn on the reduced image
    finally:
        backend.close()


def test_fast_segmentation_masks_are_at_the_size_sent(tmp_path: Path) -> None:
    exact, fast = make_task("segmentation", False), make_task("segmentation", True)
    backend = load_backend(PACKAGES["segmentation"], exact.manifest, 1, "auto")
    try:
        data, scene = _scene_jpeg("segmentation", 0)
        got = _answer(fast, backend, data, {"return_overlay": True})
        ref = _answer(exact, backend, data, {})
        assert got.mask.shape == ref.mask.shape == scene.mask.shape
        assert np.mean(got.mask == ref.mask) > 0.99
        assert got.overlay_png is not None
        overlay = Image.open(io.BytesIO(got.overlay_png))
        assert overlay.width == scene.mask.shape[1]  # the overlay is as large as the mask
    finally:
        backend.close()


def test_fast_overlay_copy_of_a_large_png_fits_max_output_pixels() -> None:
    task = make_task("segmentation", True, max_output_pixels=1_000_000)
    buf = io.BytesIO()
    Image.new("RGB", (3001, 2001), (20, 40, 60)).save(buf, "PNG")
    array, meta, _ = prepared(task, buf.getvalue())
    assert meta.image.width * meta.image.height <= 1_000_000
    assert (meta.orig_width, meta.orig_height) == (3001, 2001)
    exact, _, _ = prepared(
        make_task("segmentation", False, max_output_pixels=1_000_000), buf.getvalue()
    )
    assert np.array_equal(array, exact)  # a PNG's network input is the same both ways
