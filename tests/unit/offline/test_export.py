"""ONNX export: parity with torch in onnxruntime, dynamic shapes, golden parity, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from care_serve.backends.onnx_session import create_onnx_session
from care_serve.errors import ExportError
from care_serve.models import create_model
from care_serve.offline.export import ExportReport, export_onnx
from tests.helpers.numerics import rel_error
from tests.helpers.paths import FIXTURES
from tests.unit.models.test_fuse import randomize

ORT_TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread: on a shared 2-core box OpenMP spinning makes 2 threads 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ort_vs_torch(path: Path, model: nn.Module, shape: tuple[int, ...]) -> float:
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = model(x)
    out = create_onnx_session(path, 1).run(None, {"input": x.numpy()})[0]
    return rel_error(out, ref)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportReport]:
    torch.manual_seed(0)
    model = randomize(create_model("care_tiny"))
    out = tmp_path_factory.mktemp("tiny")
    return {
        "model": model,  # type: ignore[dict-item]
        "fused": export_onnx(model, out / "fused.onnx", input_size=(64, 64)),
        "plain": export_onnx(model, out / "plain.onnx", input_size=(64, 64), fuse=False),
    }


def test_export_reports_parity_and_graph(tiny_exports: dict[str, ExportReport]) -> None:
    for key in ("fused", "plain"):
        report = tiny_exports[key]
        assert report.path.is_file() and report.opset >= 17
        assert report.fused is (key == "fused")
        assert len(report.rel_errors) == 2  # the export shape and a second, larger one
        assert 0 < report.max_rel_error <= ORT_TOL
        assert report.num_nodes == sum(report.op_histogram.values())
        assert "Conv" in report.op_histogram and report.seconds > 0


def test_fusion_makes_the_graph_smaller(tiny_exports: dict[str, ExportReport]) -> None:
    fused, plain = tiny_exports["fused"], tiny_exports["plain"]
    assert fused.num_nodes < 0.8 * plain.num_nodes
    assert "BatchNormalization" not in fused.op_histogram
    assert plain.op_histogram.get("BatchNormalization", 0) > 0


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 64), (3, 3, 32, 128)])
def test_dynamic_batch_and_size_really_work(
    tiny_exports: dict[str, ExportReport], shape: tuple[int, ...]
) -> None:
    model = tiny_exports["model"]
    assert ort_vs_torch(tiny_exports["fused"].path, model, shape) <= ORT_TOL  # type: ignore[arg-type]


def test_golden_parity_of_the_fused_export(
    official_s0_path: Path, golden_input: np.ndarray, tmp_path: Path
) -> None:
    model = create_model("care_s0", checkpoint=official_s0_path)
    report = export_onnx(model, tmp_path / "s0.onnx", input_size=(64, 64), batch_size=2)
    assert report.max_rel_error <= ORT_TOL
    session = create_onnx_session(report.path, 1)
    logits = session.run(None, {"input": golden_input})[0]
    assert rel_error(logits, np.load(FIXTURES / "care_s0_official_logits.npy")) <= ORT_TOL
    assert ort_vs_torch(report.path, model, (3, 3, 96, 64)) <= ORT_TOL


class _MultiOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_model("care_tiny", num_classes=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone.forward_intermediates(x))


def test_other_module_types_export_with_named_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize(_MultiOutput())
    names = ("p2", "p3", "p4", "p5")
    report = export_onnx(model, tmp_path / "m.onnx", input_size=(64, 96), output_names=names)
    assert report.output_names == names and report.max_rel_error <= ORT_TOL
    session = create_onnx_session(report.path, 1)
    assert [o.name for o in session.get_outputs()] == list(names)


def test_wrong_number_of_output_names_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"1 output.*2 output name"):
        export_onnx(create_model("care_tiny"), tmp_path / "x.onnx", output_names=("a", "b"))


def test_disagreement_above_tolerance_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="disagrees with torch"):
        export_onnx(create_model("care_tiny"), path, input_size=(32, 32), tolerance=0.0)
    assert not path.exists()


def test_bad_input_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        export_onnx(create_model("care_tiny"), tmp_path / "x.onnx", input_size=(0, 64))


def test_session_module_does_not_import_torch() -> None:
    code = "import sys, care_serve.backends.onnx_session; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_session_rejects_missing_file_and_bad_threads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        create_onnx_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="positive"):
        from care_serve.backends.onnx_session import session_options

        session_options(0)


def test_spinning_sessions_stop_spinning_when_a_run_returns() -> None:
    from care_serve.backends.onnx_session import session_options

    spinning = session_options(1, spinning=True)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.get_session_config_entry("session.force_spinning_stop") == "1"
    sleeping = session_options(1, spinning=False)
    assert sleeping.get_session_config_entry("session.intra_op.allow_spinning") == "0"
