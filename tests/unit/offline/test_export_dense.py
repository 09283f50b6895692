"""Both dense networks export through ``export_onnx`` (fused, dynamic) and agree across backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from care_serve.backends.onnx_session import create_onnx_session
from care_serve.imaging.letterbox import preprocess
from care_serve.models.detection import DETECTION_OUTPUT_NAMES, CAREDetector
from care_serve.models.segmentation import SEGMENTATION_OUTPUT_NAMES, CARESegmenter
from care_serve.offline.export import export_onnx
from care_serve.postprocess.detection import postprocess_detections
from care_serve.postprocess.segmentation import logits_to_mask
from tests.helpers.numerics import rel_error
from tests.unit.models.test_dense_networks import randomise_batchnorms

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")

# Batch and size differ from the export's own check (1 x 96 x 128, then 2 x 128 x 128).
CHECK_SHAPES = [(3, 64, 160), (1, 224, 96)]


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _export(model: torch.nn.Module, path: Path, names: tuple[str, ...]) -> object:
    report = export_onnx(
        model, path, input_size=(96, 128), output_names=names, fuse=True, verify=True, threads=1
    )
    assert report.fused and report.max_rel_error <= 1e-4
    assert "BatchNormalization" not in report.op_histogram
    return create_onnx_session(path, threads=1)


def test_detector_export_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorms(CAREDetector("care_tiny", num_classes=3)).eval()
    session = _export(model, tmp_path / "det.onnx", DETECTION_OUTPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == list(DETECTION_OUTPUT_NAMES)  # type: ignore[attr-defined]
    for shape in CHECK_SHAPES:
        x = torch.from_numpy(rng.standard_normal((shape[0], 3, *shape[1:]), dtype=np.float32))
        with torch.no_grad():
            ref = model(x)
        outs = session.run(None, {"input": x.numpy()})  # type: ignore[attr-defined]
        for out, r in zip(outs, ref, strict=True):
            assert out.shape == tuple(r.shape)
            assert rel_error(out, r) <= 1e-4


def test_detection_backends_give_the_same_detections(tmp_path: Path) -> None:
    """Torch and onnxruntime outputs through the shared numpy post-processing."""
    torch.manual_seed(1)
    model = randomise_batchnorms(CAREDetector("care_tiny", num_classes=2), seed=1).eval()
    # Spread the class logits so that scores are well separated.
    with torch.no_grad():
        for pred in model.head.preds:
            pred.weight[:2].normal_(0, 0.5)
            pred.bias[:2].fill_(-1.0)
    session = _export(model, tmp_path / "det.onnx", DETECTION_OUTPUT_NAMES)
    image = np.random.default_rng(1).integers(0, 256, (150, 299, 3), dtype=np.uint8)
    x, meta = preprocess(image, (320, 160))
    with torch.no_grad():
        torch_out = [t[0].numpy() for t in model(torch.from_numpy(x[None]))]
    ort_out = [o[0] for o in session.run(None, {"input": x[None]})]  # type: ignore[attr-defined]
    a = postprocess_detections(*torch_out, meta, score_threshold=0.2, max_detections=20)
    b = postprocess_detections(*ort_out, meta, score_threshold=0.2, max_detections=20)
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert np.all((a.boxes >= 0) & (a.boxes <= [299, 150, 299, 150]))


def test_segmenter_export_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorms(CARESegmenter("care_tiny", num_classes=4)).eval()
    session = _export(model, tmp_path / "seg.onnx", SEGMENTATION_OUTPUT_NAMES)
    for shape in CHECK_SHAPES:
        x = torch.from_numpy(rng.standard_normal((shape[0], 3, *shape[1:]), dtype=np.float32))
        with torch.no_grad():
            ref = model(x)
        (out,) = session.run(None, {"input": x.numpy()})  # type: ignore[attr-defined]
        assert out.shape == tuple(ref.shape) == (shape[0], 4, shape[1] // 4, shape[2] // 4)
        assert rel_error(out, ref) <= 1e-4
    image = rng.integers(0, 256, (291, 37, 3), dtype=np.uint8)
    x, meta = preprocess(image, (64, 256))
    with torch.no_grad():
        ref_mask = logits_to_mask(model(torch.from_numpy(x[None]))[0].numpy(), meta)
    (out,) = session.run(None, {"input": x[None]})  # type: ignore[attr-defined]
    mask = logits_to_mask(out[0], meta)
    assert mask.shape == (291, 37)
    assert (mask == ref_mask).mean() >= 0.999
