"""One virtual environment per serving framework, with pinned versions.

The frameworks pin their own FastAPI, pydantic, grpcio, protobuf and uvloop, which
clash with care-serve's and with each other's, so each gets a venv of its own under
``~/.cache/care-serve-peers/<framework>/venv`` (``CARE_SERVE_PEERS_CACHE`` moves it),
made from the interpreter that made the project's venv. Every venv also gets the
same onnxruntime, Pillow and numpy as the project, so the model runs on the same
kernels and the images are decoded by the same code. A venv is made again when its
pins change (``requirements.txt`` in it is the stamp); ``pip freeze`` is kept beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["COMMON", "FRAMEWORK_REQUIREMENTS", "base_python", "cache_dir", "ensure_env"]

# The project's own versions (pyproject and .venv): the same kernels and decoder everywhere.
COMMON = ("onnxruntime==1.32.0", "pillow==13.0.0", "numpy==2.4.6")

FRAMEWORK_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "kserve": ("kserve==0.21.0",),
    "bentoml": ("bentoml==1.4.40",),
    "litserve": ("litserve==0.2.19", "python-multipart==0.0.34"),
    # Ray 2.54+ binds each replica's inter-deployment gRPC server to [::] (no option); Ray 2.53
    # reads protobuf descriptors in a way protobuf 7 removed.
    "ray-serve": ("ray[serve]==2.53.0", "protobuf==6.33.5"),
    # MLServer 1.7.1's inference workers crash on start with uvloop >= 0.22.
    "mlserver": ("mlserver==1.7.1", "uvloop==0.21.0"),
    # PyTriton 0.7.0 wants numpy < 2.
    "pytriton": ("nvidia-pytriton==0.7.0", "numpy==1.26.4"),
}
INSTALL_TIMEOUT_S = 1800


def cache_dir() -> Path:
    return Path(os.environ.get("CARE_SERVE_PEERS_CACHE", "~/.cache/care-serve-peers")).expanduser()


def base_python() -> Path:
    """The interpreter that made the project's venv (not the venv's own ``python``)."""
    return Path(getattr(sys, "_base_executable", sys.executable))


def requirements(key: str) -> list[str]:
    """The pins of ``key``'s venv: the framework's, then the shared ones it does not pin."""
    own = FRAMEWORK_REQUIREMENTS[key]
    names = {pin.split("==")[0].split("[")[0] for pin in own}
    return [*own, *(pin for pin in COMMON if pin.split("==")[0] not in names)]


def venv_dir(key: str) -> Path:
    return cache_dir() / key / "venv"


def ensure_env(key: str, log: Callable[[str], None] = print) -> Path:
    """``key``'s venv with its pins installed (made or remade as needed): its ``python``."""
    venv = venv_dir(key)
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    wanted = "\n".join(requirements(key)) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    log(f"  making the {key} venv in {venv} ({', '.join(requirements(key))}) ...")
    subprocess.run(
        [str(base_python()), "-m", "venv", "--clear", str(venv)], check=True, timeout=300
    )
    install_log = venv.parent / "install.log"
    with install_log.open("wb") as out:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-input", *requirements(key)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        tail = install_log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"pip install for {key} failed (see {install_log}):\n{tail}")
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120
    )
    (venv / "freeze.txt").write_text(freeze.stdout)
    stamp.write_text(wanted)
    return python


def main() -> int:
    """Make every framework's venv (``python -m benchmarks.peers.frameworks.envs [KEY...]``)."""
    keys = sys.argv[1:] or list(FRAMEWORK_REQUIREMENTS)
    failed = 0
    for key in keys:
        try:
            print(f"{key}: {ensure_env(key)}", flush=True)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            failed += 1
            print(f"{key}: FAILED: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
