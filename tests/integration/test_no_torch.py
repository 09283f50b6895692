"""The ONNX-only server never imports torch (the edge image has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.packages import jpeg_bytes
from tests.helpers.paths import ROOT

SCRIPT = """
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import httpx
from care_serve.cli import build_parser
from care_serve.server import BackgroundStack
from care_serve.settings import Settings

build_parser()  # every subcommand module must import without torch
settings = Settings(model_store=sys.argv[1], http_port=0, grpc_port=0, intra_op_threads=1,
                    warmup_runs=1)
with BackgroundStack(settings) as stack:
    response = httpx.post(stack.http_url + "/classify", content=open(sys.argv[2], "rb").read())
    assert response.status_code == 200, response.text
    loaded = [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch"]
    assert not loaded, loaded
    print("served", response.json()["model"], "without torch")
"""


def test_onnx_server_runs_without_torch(store: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg_bytes())
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(store), str(image)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served tiny without torch" in done.stdout
