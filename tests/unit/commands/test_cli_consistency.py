"""The command line as a new user meets it."""

from __future__ import annotations

import argparse
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from benchmarks.entry import command_parser
from benchmarks.load.cli import first_classification_model, print_report
from benchmarks.load.cli import register as load_register
from benchmarks.load.client import EngineResult, LevelResult
from benchmarks.model.cli import register as model_register
from care_serve.cli import build_parser, main
from care_serve.store import write_package
from tests.helpers.packages import LABELS, make_manifest
from tests.helpers.paths import ROOT

BENCHMARK_COMMANDS = {"bench": model_register, "bench-load": load_register}


def _parser(command: str) -> argparse.ArgumentParser:
    if command in BENCHMARK_COMMANDS:
        return command_parser(command, BENCHMARK_COMMANDS[command])
    return build_parser()


def _parse(*argv: str) -> Any:
    return _parser(argv[0]).parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "care_tiny", "--random-weights", "--output", "x.onnx"],
        ["info", "care_tiny"],
        ["bench"],
        ["import", "ckpt.pth", "--arch", "care_s0", "--name", "m"],
        ["train", "classification", "--data", "d", "--model-store", "s"],
    ],
)
def test_input_size_is_spelled_one_way(argv: list[str]) -> None:
    assert _parse(*argv, "--input-size", "256x320").input_size == (256, 320)
    assert _parse(*argv, "--input-size", "224").input_size == (224, 224)
    with pytest.raises(SystemExit):
        _parse(*argv, "--input-size", "100x7")
    help_text = _help(argv[0])
    assert "--input-size" in help_text and "HxW" in help_text


def test_bench_load_image_size_is_height_x_width() -> None:
    assert _parse("bench-load", "--image-size", "480x640").image_size == (480, 640)
    assert _parse("bench-load").image_size == (480, 640)
    assert "HxW" in _help("bench-load")


def _help(command: str) -> str:
    parser = _parser(command)
    sub = next(a for a in parser._actions if a.dest == "command")
    return str(sub.choices[command].format_help())  # type: ignore[attr-defined]


def test_serve_help_shows_every_default() -> None:
    text = re.sub(r"\s+", " ", _help("serve"))
    for shown in ("default: 8000", "default: 50051", "default: 127.0.0.1", "default: text"):
        assert shown in text, shown
    options = next(a for a in build_parser()._actions if a.dest == "command")
    serve = options.choices["serve"]  # type: ignore[attr-defined]
    for action in serve._actions:
        if action.dest not in ("help",):
            assert "default:" in (action.help or ""), action.dest


def test_bench_load_help_tells_the_truth_and_the_report_has_no_goals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "first classification model" in _help("bench-load")
    listing = [
        {"name": "a-det", "task": "detection", "state": "ready"},
        {"name": "b-cls", "task": "classification", "state": "ready"},
        {"name": "c-cls", "task": "classification", "state": "ready"},
    ]
    assert first_classification_model(listing) == "b-cls"
    assert first_classification_model(listing[:1]) is None
    level = LevelResult("rest", 1, [5.0, 6.0], 0, seconds=1.0, client_cpu_s=0.001)
    engine = EngineResult({1: 100.0}, batch1_ms=4.0, decode_ms=1.0, cpu_ms_per_image={1: 9.0})
    print_report([level], engine, engine)
    out = capsys.readouterr().out
    assert "target" not in out and "NOT met" not in out and " met" not in out


def test_packages_are_world_readable_honouring_the_umask(tmp_path: Path) -> None:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"x")
    weights.chmod(0o600)
    old = os.umask(0o022)
    try:
        dest = write_package(tmp_path / "store", make_manifest(), weights, LABELS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    for member in dest.iterdir():
        assert stat.S_IMODE(member.stat().st_mode) == 0o644, member
    old = os.umask(0o077)
    try:
        private = write_package(tmp_path / "private", make_manifest(), weights, LABELS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / "manifest.json").stat().st_mode) == 0o600


def test_import_prints_progress(
    tmp_path: Path, tiny_models: dict[int, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, ckpt = tiny_models[1]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    argv = ["import", str(ckpt), "--arch", "care_tiny", "--name", "tiny", "--input-size", "64"]
    assert main([*argv, "--model-store", str(tmp_path / "store"), "--labels", str(labels)]) == 0
    err = capsys.readouterr().err.lower()
    for step in ("loading", "export", "parity", "writing"):
        assert step in err, err


def test_models_doc_matches_info_and_links_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "care_s0"]) == 0
    fused = re.search(r"fused model: parameters ([\d,]+)", capsys.readouterr().out)
    assert fused is not None
    doc = (ROOT / "docs" / "models.md").read_text()
    assert f"fused model: parameters {fused.group(1)}" in doc
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        path = page.relative_to(ROOT)
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (ROOT / path).parent.joinpath(target).exists(), (path, target)
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text):
            assert list(ROOT.rglob(name)), (path, name)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            linked = page.parent / target if target else page
            if linked.suffix == ".md" and not target.startswith(("http://", "https://")):
                assert anchor in _anchors(linked), (path, target, anchor)


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
