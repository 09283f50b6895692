"""/detect and /segment over REST and gRPC on real servers (care_tiny networks, random weights).

One store per module: a detector and a segmenter as ONNX and as PyTorch packages
(same weights), a batching variant of the detector, and the tiny classifier.
Answers are checked against a reference built only from the dense helper's
numpy functions (``geometry.preprocess`` + onnxruntime + ``postprocess_*``).
"""

from __future__ import annotations

import base64
import io
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from care_serve.backends.onnx_backend import make_session
from care_serve.errors import InvalidInput, ModelStoreError
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.imaging.decode import decode_image
from care_serve.imaging.letterbox import preprocess
from care_serve.models.detection import DETECTION_OUTPUT_NAMES, CAREDetector
from care_serve.models.segmentation import SEGMENTATION_OUTPUT_NAMES, CARESegmenter
from care_serve.offline.export import export_onnx
from care_serve.postprocess.detection import postprocess_detections
from care_serve.postprocess.drawing import detection_palette
from care_serve.postprocess.segmentation import make_palette, overlay, postprocess_segmentation
from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from care_serve.store import BatchingConfig, InputSpec, Manifest, Preprocessing, write_package
from care_serve.tasks.dense import letterbox_preprocess
from care_serve.tasks.detection import DetectionTask
from care_serve.tasks.segmentation import SegmentationTask
from tests.helpers.dense import decode_png, post, rest_dets
from tests.helpers.numerics import rel_error
from tests.helpers.packages import LABELS as CLS_LABELS
from tests.helpers.packages import jpeg_bytes, make_manifest, png_bytes
from tests.helpers.paths import ROOT
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN, serving_stack

HEIGHT, WIDTH = 96, 128  # non-square, so a swapped height/width would show
DET_LABELS = ["circle", "square", "triangle"]
SEG_LABELS = ["background", "circle", "square", "triangle"]
# (width, height) of client images: wide, tall, large, exact, tiny, square
SIZES = [(200, 60), (37, 291), (640, 480), (WIDTH, HEIGHT), (9, 7), (50, 50)]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def _spread(conv: torch.nn.Module, std: float) -> None:
    """Random weights with varied outputs (the default init makes every score ~0.01)."""
    assert isinstance(conv, torch.nn.Conv2d)
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
        assert conv.bias is not None
        conv.bias.zero_()


def _manifest(name: str, task: str, fmt: str, **extra: Any) -> Manifest:
    det = task == "detection"
    fields: dict[str, Any] = {
        "name": name,
        "version": 1,
        "task": task,
        "architecture": "care_tiny",
        "format": fmt,
        "weights": "model.onnx" if fmt == "onnx" else "model.pth",
        "num_classes": len(DET_LABELS if det else SEG_LABELS),
        "input": InputSpec(height=HEIGHT, width=WIDTH),
        "preprocessing": Preprocessing(mode="letterbox", interpolation="bilinear"),
        "outputs": list(DETECTION_OUTPUT_NAMES if det else SEGMENTATION_OUTPUT_NAMES),
        "batching": BatchingConfig(max_batch_size=2, max_queue_delay_ms=1.0),
    }
    fields.update(extra)
    return Manifest(**fields)


@pytest.fixture(scope="module")
def dense_store(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[int, Any]
) -> dict[str, Any]:
    """The store and the torch models: det/seg (ONNX), det-pt/seg-pt, det-batch, tiny."""
    out = tmp_path_factory.mktemp("dense")
    root = out / "store"
    torch.manual_seed(0)
    det = CAREDetector("care_tiny", num_classes=len(DET_LABELS))
    for pred in det.head.preds:
        _spread(pred, 0.3)
    seg = CARESegmenter("care_tiny", num_classes=len(SEG_LABELS))
    _spread(seg.decoder.classifier, 0.5)
    for label, model, task, labels in (
        ("det", det, "detection", DET_LABELS),
        ("seg", seg, "segmentation", SEG_LABELS),
    ):
        model.eval()
        onnx_path, pth = out / f"{label}.onnx", out / f"{label}.pth"
        export_onnx(
            model,
            onnx_path,
            input_size=(HEIGHT, WIDTH),
            output_names=model.output_names,
            verify=False,
        )
        torch.save({"state_dict": model.state_dict()}, pth)
        write_package(root, _manifest(label, task, "onnx"), onnx_path, labels)
        kwargs = dict(model.init_kwargs)
        write_package(
            root, _manifest(f"{label}-pt", task, "pytorch", model_kwargs=kwargs), pth, labels
        )
    # Two requests wait (up to 5 s) for each other, so they always run as one batch.
    batching = BatchingConfig(max_batch_size=2, max_queue_delay_ms=5000.0)
    write_package(
        root,
        _manifest("det-batch", "detection", "onnx", batching=batching),
        out / "det.onnx",
        DET_LABELS,
    )
    # A detector whose manifest asks for a centre crop: refused when it loads.
    write_package(
        root,
        _manifest("bad-det", "detection", "onnx", preprocessing=Preprocessing()),
        out / "det.onnx",
        DET_LABELS,
    )
    write_package(root, make_manifest(), tiny_models[1][1], CLS_LABELS)
    return {
        "root": root,
        "det": det,
        "seg": seg,
        "onnx": {k: out / f"{k}.onnx" for k in ("det", "seg")},
    }


@pytest.fixture(scope="module")
def stack(dense_store: dict[str, Any]) -> Iterator[BackgroundStack]:
    with serving_stack(dense_store["root"], admin_token=ADMIN_TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def stub(stack: BackgroundStack) -> Iterator[Any]:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


@pytest.fixture(scope="module")
def sessions(dense_store: dict[str, Any]) -> dict[str, Any]:
    """Reference onnxruntime sessions (1 thread, as the server runs them)."""
    paths = dense_store["onnx"]
    return {"det": make_session(paths["det"], 1), "seg": make_session(paths["seg"], 1)}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def scene_png(width: int, height: int, seed: int = 0) -> bytes:
    """A smooth random RGB picture with a few flat rectangles (lossless PNG)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))
    img = img.copy()
    for _ in range(3):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        img[y : y + height // 3, x : x + width // 3] = rng.integers(0, 256, 3)
    return png_bytes(Image.fromarray(img))


def rgb_of(data: bytes) -> np.ndarray:
    return np.asarray(decode_image(data, max_bytes=10**8, max_pixels=10**8).image)


def ref_detections(
    session: Any, data: bytes, threshold: float, max_dets: int, class_agnostic: bool = False
) -> Any:
    x, meta = preprocess(rgb_of(data), (WIDTH, HEIGHT))
    cls_logits, box_ltrb = session.run(None, {"input": x[None]})
    return postprocess_detections(
        cls_logits[0],
        box_ltrb[0],
        meta,
        score_threshold=threshold,
        max_detections=max_dets,
        class_agnostic=class_agnostic,
    )


def ref_mask(session: Any, data: bytes) -> np.ndarray:
    x, meta = preprocess(rgb_of(data), (WIDTH, HEIGHT))
    (logits,) = session.run(None, {"input": x[None]})
    return postprocess_segmentation(logits[0], meta).mask


def grpc_dets(reply: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dets = reply.detections
    boxes = np.asarray([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets], np.float64)
    return (
        boxes.reshape(-1, 4),
        np.asarray([d.score for d in dets]),
        np.asarray([d.class_id for d in dets]),
    )


def legend_colours(strip: np.ndarray) -> set[tuple[int, ...]]:
    """The colours of a legend strip that are not greys (its text and background are)."""
    pixels = strip.reshape(-1, 3)
    coloured = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 0]
    return {tuple(int(v) for v in p) for p in np.unique(coloured, axis=0)}


def grpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_detect_boxes_in_image_and_equal_to_reference_over_both_transports(
    stack: BackgroundStack, stub: Any, sessions: dict[str, Any], width: int, height: int
) -> None:
    data = scene_png(width, height, seed=width)
    response = post(stack, "/detect", data, model="det", score_threshold=0.0, max_detections=25)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "model",
        "version",
        "image_width",
        "image_height",
        "detections",
        "batch_size",
        "timings_ms",
    }
    assert (body["model"], body["version"]) == ("det", 1)
    assert (body["image_width"], body["image_height"]) == (width, height)
    assert 0 < len(body["detections"]) <= 25
    for d in body["detections"]:
        assert set(d) == {"label", "class_id", "score", "box"}
        assert d["label"] == DET_LABELS[d["class_id"]] and 0.0 <= d["score"] <= 1.0
        x1, y1, x2, y2 = d["box"]
        assert 0.0 <= x1 < x2 <= width and 0.0 <= y1 < y2 <= height, (d, width, height)
    boxes, scores, classes = rest_dets(body)
    assert np.all(np.diff(scores) <= 0), "best first"

    ref = ref_detections(sessions["det"], data, 0.0, 25)
    np.testing.assert_array_equal(classes, ref.class_ids)
    np.testing.assert_allclose(boxes, ref.boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(scores, ref.scores, rtol=1e-5, atol=1e-6)

    reply = stub.Detect(
        pb.DetectRequest(model="det", image=data, score_threshold=0.0, max_detections=25),
        timeout=30,
    )
    assert (reply.model, reply.version, reply.image_width, reply.image_height) == (
        "det",
        1,
        width,
        height,
    )
    g_boxes, g_scores, g_classes = grpc_dets(reply)
    np.testing.assert_array_equal(g_classes, classes)
    assert [d.label for d in reply.detections] == [d["label"] for d in body["detections"]]
    np.testing.assert_allclose(g_boxes, boxes, rtol=1e-6, atol=1e-3)  # float32 on the wire
    np.testing.assert_allclose(g_scores, scores, rtol=1e-6)


def test_detect_parameters_and_exif_orientation(
    stack: BackgroundStack, stub: Any, sessions: dict[str, Any]
) -> None:
    data = scene_png(300, 200, seed=7)
    full = post(stack, "/detect", data, model="det", score_threshold=0.0, max_detections=20)
    all_scores = rest_dets(full.json())[1]
    assert len(all_scores) == 20
    # The manifest default threshold is 0.3; a higher one keeps exactly the better ones.
    default = rest_dets(post(stack, "/detect", data, model="det", max_detections=20).json())[1]
    np.testing.assert_allclose(default, all_scores[all_scores >= 0.3], rtol=1e-6)
    cut = float(np.median(all_scores))
    high = post(stack, "/detect", data, model="det", score_threshold=cut, max_detections=20)
    np.testing.assert_allclose(rest_dets(high.json())[1], all_scores[all_scores >= cut])
    # Greedy NMS stops early: the best 3 are the first 3 of the best 20.
    three = post(stack, "/detect", data, model="det", score_threshold=0.0, max_detections=3)
    assert three.json()["detections"] == full.json()["detections"][:3]
    reply = stub.Detect(
        pb.DetectRequest(model="det", image=data, score_threshold=0.0, max_detections=3),
        timeout=30,
    )
    assert [d.class_id for d in reply.detections] == [
        d["class_id"] for d in three.json()["detections"]
    ]
    # Class-agnostic NMS on request, over both transports (the manifest default is class-aware).
    ref = ref_detections(sessions["det"], data, 0.0, 20, class_agnostic=True)
    aware_boxes = rest_dets(full.json())[0]
    assert ref.boxes.shape != aware_boxes.shape or not np.allclose(ref.boxes, aware_boxes)
    agnostic = post(
        stack, "/detect", data, model="det", score_threshold=0.0, class_agnostic_nms=True
    )
    a_boxes, a_scores, a_classes = rest_dets(agnostic.json())
    np.testing.assert_allclose(a_scores[:20], ref.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a_classes[:20], ref.class_ids)
    np.testing.assert_allclose(a_boxes[:20], ref.boxes, rtol=0, atol=1e-3)
    reply = stub.Detect(
        pb.DetectRequest(
            model="det", image=data, score_threshold=0.0, max_detections=20, class_agnostic_nms=True
        ),
        timeout=30,
    )
    np.testing.assert_array_equal(grpc_dets(reply)[2], ref.class_ids)

    # EXIF orientation 6 (rotate 90 degrees clockwise): the client's image is 200 x 300.
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", exif=exif.tobytes())
    rotated = post(stack, "/detect", buf.getvalue(), model="det", score_threshold=0.0).json()
    assert (rotated["image_width"], rotated["image_height"]) == (200, 300)
    for d in rotated["detections"]:
        assert 0 <= d["box"][0] < d["box"][2] <= 200 and 0 <= d["box"][1] < d["box"][3] <= 300


@pytest.mark.parametrize(("width", "height"), [(200, 60), (37, 291), (640, 480)])
def test_detect_overlay_draws_the_answered_boxes_over_both_transports(
    stack: BackgroundStack, stub: Any, width: int, height: int
) -> None:
    data = scene_png(width, height, seed=height)
    params = {"model": "det", "score_threshold": 0.0, "max_detections": 6}
    dets = post(stack, "/detect", data, **params).json()["detections"]
    assert dets
    over = post(stack, "/detect", data, format="overlay", **params)
    assert over.status_code == 200 and over.headers["content-type"] == "image/png"
    assert (over.headers["x-model"], over.headers["x-model-version"]) == ("det", "1")
    pretty = np.asarray(decode_png(over.content))
    assert pretty.shape[0] > height and pretty.shape[1] >= width

    # Outside the rows of each box and of the caption above it, the image is unchanged
    # (a caption may be shifted left to stay in the image, or sit inside a box at the top).
    image, drawn = rgb_of(data), pretty[:height, :width]
    free = np.ones((height, width), bool)
    band = 40  # more than a caption's height at any image size
    for d in dets:
        _, y1, _, y2 = d["box"]
        free[max(0, int(y1) - band) : max(int(y2) + 3, band)] = False
    np.testing.assert_array_equal(drawn[free], image[free])
    assert (drawn != image).any()
    colours = detection_palette(make_palette(len(DET_LABELS) + 1))
    assert legend_colours(pretty[height:]) == {tuple(colours[d["class_id"]]) for d in dets}

    reply = stub.Detect(
        pb.DetectRequest(
            model="det", image=data, score_threshold=0.0, max_detections=6, return_overlay=True
        ),
        timeout=30,
    )
    np.testing.assert_array_equal(np.asarray(decode_png(reply.overlay_png)), pretty)
    plain = stub.Detect(pb.DetectRequest(model="det", image=data), timeout=30)
    assert plain.overlay_png == b""
    bad = post(stack, "/detect", data, model="det", format="svg")
    assert bad.status_code == 400 and "format" in bad.json()["error"]["message"]


def test_detect_requests_batched_together_get_their_own_answers(
    stack: BackgroundStack, sessions: dict[str, Any]
) -> None:
    images = [scene_png(320, 90, seed=1), scene_png(70, 260, seed=2)]
    bodies: list[dict[str, Any]] = [{}, {}]

    def call(i: int) -> None:
        r = post(stack, "/detect", images[i], model="det-batch", score_threshold=0.0)
        assert r.status_code == 200, r.text
        bodies[i] = r.json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for data, body in zip(images, bodies, strict=True):
        assert body["batch_size"] == 2
        ref = ref_detections(sessions["det"], data, 0.0, 100)
        boxes, _, classes = rest_dets(body)
        np.testing.assert_array_equal(classes, ref.class_ids)
        np.testing.assert_allclose(boxes, ref.boxes, atol=1e-3)


# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_segment_mask_shares_png_and_overlay_over_both_transports(
    stack: BackgroundStack, stub: Any, sessions: dict[str, Any], width: int, height: int
) -> None:
    data = scene_png(width, height, seed=height)
    response = post(stack, "/segment", data, model="seg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mask_width"], body["mask_height"]) == (width, height)
    assert set(body) == {
        "model",
        "version",
        "image_width",
        "image_height",
        "mask_width",
        "mask_height",
        "class_names",
        "mask_png",
        "class_shares",
        "batch_size",
        "timings_ms",
    }
    assert (body["model"], body["image_width"], body["image_height"]) == ("seg", width, height)
    assert body["class_names"] == SEG_LABELS
    png = base64.b64decode(body["mask_png"])
    image = decode_png(png)
    assert image.mode == "L" and image.size == (width, height)
    mask = np.asarray(image)
    assert int(mask.max()) < len(SEG_LABELS)
    np.testing.assert_array_equal(mask, ref_mask(sessions["seg"], data))
    shares = body["class_shares"]
    assert [(s["class_id"], s["label"]) for s in shares] == list(enumerate(SEG_LABELS))
    got = np.asarray([s["share"] for s in shares])
    assert math.isclose(got.sum(), 1.0, abs_tol=1e-9)
    np.testing.assert_allclose(got, np.bincount(mask.ravel(), minlength=4) / mask.size)

    raw = post(stack, "/segment", data, model="seg", format="png")
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-model"] == "seg" and raw.headers["x-class-names"] == ",".join(SEG_LABELS)
    np.testing.assert_array_equal(np.asarray(decode_png(raw.content)), mask)

    over = post(stack, "/segment", data, model="seg", format="overlay")
    assert over.status_code == 200 and over.headers["content-type"] == "image/png"
    pretty = np.asarray(decode_png(over.content))
    assert pretty.ndim == 3 and pretty.shape[0] > height and pretty.shape[1] >= width
    palette = make_palette(len(SEG_LABELS))
    expected = overlay(rgb_of(data), mask, 0.5, palette)
    np.testing.assert_array_equal(pretty[:height, :width], expected)  # the image, unchanged size
    np.testing.assert_array_equal(pretty[:height, :width][mask == 0], rgb_of(data)[mask == 0])
    present = {tuple(palette[c]) for c in range(1, len(SEG_LABELS)) if got[c] > 0}
    assert legend_colours(pretty[height:]) == present  # the legend below: one swatch a class

    reply = stub.Segment(pb.SegmentRequest(model="seg", image=data), timeout=30)
    assert (reply.image_width, reply.image_height) == (width, height)
    assert list(reply.class_names) == SEG_LABELS and reply.overlay_png == b""
    np.testing.assert_array_equal(np.asarray(decode_png(reply.mask_png)), mask)
    np.testing.assert_allclose([c.share for c in reply.class_shares], got, rtol=1e-6)
    with_overlay = stub.Segment(
        pb.SegmentRequest(model="seg", image=data, return_overlay=True), timeout=30
    )
    np.testing.assert_array_equal(np.asarray(decode_png(with_overlay.overlay_png)), pretty)


# ---------------------------------------------------------------------------
# Backends, bad inputs, metrics
# ---------------------------------------------------------------------------


def test_torch_backend_agrees_with_onnx_backend(stack: BackgroundStack, stub: Any) -> None:
    for width, height, seed in ((160, 120, 11), (90, 210, 12)):
        data = scene_png(width, height, seed)
        onnx = post(stack, "/detect", data, model="det", score_threshold=0.0, max_detections=10)
        pt = post(stack, "/detect", data, model="det-pt", score_threshold=0.0, max_detections=10)
        assert pt.status_code == 200, pt.text
        o_boxes, o_scores, o_classes = rest_dets(onnx.json())
        p_boxes, p_scores, p_classes = rest_dets(pt.json())
        np.testing.assert_array_equal(p_classes, o_classes)
        assert rel_error(p_scores, o_scores) < 1e-4
        assert rel_error(p_boxes, o_boxes) < 1e-4

        seg_onnx = post(stack, "/segment", data, model="seg", format="png")
        seg_pt = stub.Segment(pb.SegmentRequest(model="seg-pt", image=data), timeout=30)
        a = np.asarray(decode_png(seg_onnx.content))
        b = np.asarray(decode_png(seg_pt.mask_png))
        assert a.shape == b.shape == (height, width)
        assert np.mean(a != b) < 0.005  # only near-ties on class boundaries may flip


BAD_DETECT_PARAMS = [
    ({"score_threshold": 1.5}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": -0.1}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": "nan"}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": "high"}, "score_threshold"),
    ({"max_detections": 0}, "max_detections must be an integer in 1 to 1000"),
    ({"max_detections": 1001}, "max_detections must be an integer in 1 to 1000"),
    ({"max_detections": 2.5}, "max_detections"),
    ({"max_detections": "all"}, "max_detections"),
    ({"class_agnostic_nms": "maybe"}, "class_agnostic_nms"),
]


@pytest.mark.parametrize(("params", "message"), BAD_DETECT_PARAMS)
def test_detect_rejects_bad_parameters_over_rest(
    stack: BackgroundStack, params: dict[str, Any], message: str
) -> None:
    response = post(stack, "/detect", scene_png(64, 48), model="det", **params)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_bad_inputs_over_both_transports(stack: BackgroundStack, stub: Any) -> None:
    good = scene_png(64, 48)
    for request, needle in (
        (pb.DetectRequest(model="det", image=good, score_threshold=1.5), "score_threshold"),
        (pb.DetectRequest(model="det", image=good, max_detections=0), "max_detections"),
        (pb.DetectRequest(model="det", image=good, max_detections=5000), "1 to 1000"),
        (pb.DetectRequest(model="det", image=b"not an image"), "image"),
        (pb.DetectRequest(model="seg", image=good), "segmentation model"),
        (pb.DetectRequest(model="tiny", image=good), "use Classify"),
    ):
        error = grpc_error(stub.Detect, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert needle in error.details()
    for request, needle in (
        (pb.SegmentRequest(model="seg", image=b"\x89PNG\r\n\x1a\n broken"), "image"),
        (pb.SegmentRequest(model="det", image=good), "use Detect"),
    ):
        error = grpc_error(stub.Segment, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert needle in error.details()
    missing = grpc_error(stub.Detect, pb.DetectRequest(model="nope", image=good))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    for path, params, data, status, needle in (
        ("/detect", {"model": "det"}, b"not an image", 400, "image"),
        ("/detect", {"model": "det"}, b"", 400, "empty"),
        ("/segment", {"model": "seg"}, b"GIF89a junk", 400, "image"),
        ("/detect", {"model": "tiny"}, good, 400, "use /classify"),
        ("/segment", {"model": "det"}, good, 400, "use /detect"),
        ("/classify", {"model": "seg"}, good, 400, "use /segment"),
        ("/segment", {"model": "seg", "format": "jpeg"}, good, 400, "format"),
        ("/detect", {"model": "nope"}, good, 404, "not found"),
    ):
        response = post(stack, path, data, **params)
        assert response.status_code == status, (path, params, response.text)
        assert needle in response.json()["error"]["message"], response.text


def test_metrics_carry_the_dense_models(stack: BackgroundStack, stub: Any) -> None:
    data = scene_png(80, 60)
    assert post(stack, "/detect", data, model="det").status_code == 200
    assert post(stack, "/segment", data, model="seg").status_code == 200
    stub.Detect(pb.DetectRequest(model="det", image=data), timeout=30)
    stub.Segment(pb.SegmentRequest(model="seg", image=data), timeout=30)
    assert post(stack, "/detect", data, model="det", max_detections=0).status_code == 400
    text = httpx.get(f"{stack.http_url}/metrics").text

    def value(line_start: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(line_start)]
        assert lines, f"no metric line starts with {line_start}"
        return float(lines[0].rsplit(" ", 1)[1])

    for model in ("det", "seg"):
        for protocol in ("rest", "grpc"):
            labels = f'key="",model="{model}",outcome="success",protocol="{protocol}",version="1"'
            assert value(f"care_inference_requests_total{{{labels}}}") >= 1
        assert value(f'care_inference_executions_total{{model="{model}",version="1"}}') >= 2
        assert (
            value(
                f'care_inference_postprocess_duration_seconds_count{{model="{model}",'
                f'protocol="rest",version="1"}}'
            )
            >= 1
        )
        assert value(f'care_model_ready{{model="{model}",version="1"}}') == 1
    bad = 'key="",model="det",outcome="invalid_input",protocol="rest",version="1"'
    assert value(f"care_inference_requests_total{{{bad}}}") >= 1


def test_a_dense_package_the_task_refuses_fails_to_load_with_the_reason(
    stack: BackgroundStack, stub: Any
) -> None:
    url = stack.http_url
    info = httpx.get(f"{url}/models/bad-det").json()
    assert info["state"] == "failed" and "letterbox" in info["error"], info
    load = httpx.post(f"{url}/models/bad-det/load", headers=ADMIN, timeout=60)
    assert load.status_code == 422, load.text
    assert "preprocessing.mode 'letterbox'" in load.json()["error"]["message"]
    error = grpc_error(stub.Detect, pb.DetectRequest(model="bad-det", image=scene_png(40, 30)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "not loaded" in error.details()


# ---------------------------------------------------------------------------
# The task plugins without a server
# ---------------------------------------------------------------------------


def _settings(tmp_path: Path) -> Settings:
    return Settings(model_store=tmp_path, models=[])


@pytest.mark.parametrize(("width", "height"), [(200, 60), (37, 291), (WIDTH, HEIGHT), (640, 480)])
def test_letterbox_preprocess_is_the_training_preprocess(width: int, height: int) -> None:
    rgb = rgb_of(scene_png(width, height, seed=3))
    got, meta = letterbox_preprocess(Image.fromarray(rgb), _manifest("d", "detection", "onnx"))
    ref, ref_meta = preprocess(rgb, (WIDTH, HEIGHT))
    np.testing.assert_array_equal(got, ref)
    assert meta.letterbox == ref_meta
    # The generic PreprocessMeta fields describe the same mapping.
    assert (meta.offset_x, meta.offset_y) == (ref_meta.pad_left, ref_meta.pad_top)
    assert (meta.scale_x, meta.scale_y) == (ref_meta.scale_x, ref_meta.scale_y)


def test_task_parameters_and_manifest_checks(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    task = DetectionTask(_manifest("d", "detection", "onnx"), DET_LABELS, settings)
    assert task.parse_params({}).model_dump() == {
        "score_threshold": 0.3,
        "max_detections": 100,
        "class_agnostic_nms": False,
        "return_overlay": False,
    }
    assert task.parse_params({"return_overlay": True}).return_overlay is True
    assert task.parse_params({"class_agnostic_nms": True}).class_agnostic_nms is True
    with pytest.raises(InvalidInput, match="class_agnostic_nms must be true or false"):
        task.parse_params({"class_agnostic_nms": 1})
    with pytest.raises(InvalidInput, match="return_overlay"):
        task.parse_params({"return_overlay": "yes"})
    edge = task.parse_params({"score_threshold": 1, "max_detections": 1000})
    assert (edge.score_threshold, edge.max_detections) == (1.0, 1000)
    assert task.parse_params({"score_threshold": 0.0, "max_detections": "7"}).max_detections == 7
    for bad in ({"score_threshold": True}, {"max_detections": 1001}, {"max_detections": 3.0}):
        with pytest.raises(InvalidInput):
            task.parse_params(bad)
    custom = _manifest(
        "d",
        "detection",
        "onnx",
        postprocessing={
            "score_threshold": 0.5,
            "max_detections": 5,
            "pre_nms_top_k": 50,
            "class_agnostic_nms": True,
        },
    )
    limited = DetectionTask(custom, DET_LABELS, settings)
    assert limited.parse_params({}).model_dump() == {
        "score_threshold": 0.5,
        "max_detections": 5,
        "class_agnostic_nms": True,
        "return_overlay": False,
    }
    assert limited.parse_params({"class_agnostic_nms": False}).class_agnostic_nms is False
    with pytest.raises(InvalidInput, match="1 to 50"):
        limited.parse_params({"max_detections": 51})

    seg = SegmentationTask(_manifest("s", "segmentation", "onnx"), SEG_LABELS, settings)
    assert seg.parse_params({}).return_overlay is False
    with pytest.raises(InvalidInput, match="return_overlay"):
        seg.parse_params({"return_overlay": "yes"})

    for manifest, labels, needle in (
        (_manifest("d", "detection", "onnx", postprocessing={"nms": 0.5}), DET_LABELS, "nms"),
        (
            _manifest("d", "detection", "onnx", postprocessing={"score_threshold": 2}),
            DET_LABELS,
            "score_threshold",
        ),
        (
            _manifest("d", "detection", "onnx", postprocessing={"class_agnostic_nms": "yes"}),
            DET_LABELS,
            "class_agnostic_nms",
        ),
        (
            _manifest("d", "detection", "onnx", preprocessing=Preprocessing()),
            DET_LABELS,
            "letterbox",
        ),
        (_manifest("d", "detection", "onnx", outputs=["cls_logits"]), DET_LABELS, "output"),
        (_manifest("d", "detection", "onnx"), DET_LABELS[:2], "labels"),
        (
            _manifest("s", "segmentation", "onnx", postprocessing={"overlay_alpha": 3}),
            SEG_LABELS,
            "overlay_alpha",
        ),
    ):
        cls = DetectionTask if manifest.task == "detection" else SegmentationTask
        with pytest.raises(ModelStoreError, match=needle):
            cls(manifest, labels, settings)


# ---------------------------------------------------------------------------
# The ONNX-only server serves the dense tasks without torch
# ---------------------------------------------------------------------------

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import httpx
from care_serve.server import BackgroundStack
from care_serve.settings import Settings

settings = Settings(model_store=sys.argv[1], models=["det", "seg"], http_port=0, grpc_port=0,
                    intra_op_threads=1, warmup_runs=1)
data = open(sys.argv[2], "rb").read()
with BackgroundStack(settings) as stack:
    det = httpx.post(stack.http_url + "/detect?score_threshold=0", content=data)
    assert det.status_code == 200 and det.json()["detections"], det.text
    seg = httpx.post(stack.http_url + "/segment?format=overlay", content=data)
    assert seg.status_code == 200 and seg.content.startswith(b"\\x89PNG"), seg.text
    loaded = [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch"]
    assert not loaded, loaded
    print("served detection and segmentation without torch")
"""


def test_dense_onnx_packages_serve_without_torch(
    dense_store: dict[str, Any], tmp_path: Path
) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg_bytes(150, 100))
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(dense_store["root"]), str(image)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served detection and segmentation without torch" in done.stdout
