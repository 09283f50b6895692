"""``care-serve sign`` through the command line: keys, digests and signatures."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from care_serve.cli import main
from care_serve.store import read_manifest, write_package
from care_serve.store.signing import key_id, load_public_key
from care_serve.store.trust import TrustPolicy, TrustReport, verify_package
from tests.helpers.packages import LABELS, make_manifest


def _package(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"weights")
    return write_package(tmp_path / "store", make_manifest(), weights, LABELS)


def test_generate_a_key_sign_a_package_and_the_server_check_accepts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "package-key"
    assert main(["sign", "--generate-key", str(key)]) == 0
    out = capsys.readouterr().out
    kid = key_id(load_public_key(f"{key}.pub"))
    assert f"key {kid}" in out and f"CARE_SERVE_PACKAGE_PUBLIC_KEY={key}.pub" in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["sign", "--generate-key", str(key)]) == 1
    assert "already exists; refusing to overwrite" in capsys.readouterr().err

    package = _package(tmp_path)
    assert main(["sign", str(package), "--key", str(key)]) == 0
    assert f"signed tiny/1: {package}/manifest.sig (Ed25519, key {kid})" in (
        capsys.readouterr().out
    )
    policy = TrustPolicy.from_key_file(f"{key}.pub", require_signed=True)
    assert verify_package(package, read_manifest(package), policy, "tiny/1") == TrustReport(
        True, kid
    )


def test_sign_refuses_changed_files_and_packages_without_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    assert main(["sign", "--generate-key", str(key)]) == 0
    package = _package(tmp_path)
    (package / "model.onnx").write_bytes(b"changed after writing")
    assert main(["sign", str(package), "--key", str(key)]) == 1
    assert "tiny/1/model.onnx: sha256" in capsys.readouterr().err
    assert not (package / "manifest.sig").exists()

    package = _package(tmp_path / "old")
    path = package / "manifest.json"
    document = json.loads(path.read_text())
    del document["files"]  # a package written before digests existed
    path.write_text(json.dumps(document, indent=2) + "\n")
    assert main(["sign", str(package), "--key", str(key)]) == 1
    assert "add them in the same run with --add-digests" in capsys.readouterr().err
    (package / "manifest.sig").write_text("a signature of the manifest without digests\n")
    assert main(["sign", str(package), "--add-digests", "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "recorded the sha256 of labels.txt, model.onnx" in out and "signed tiny/1" in out
    assert "removed manifest.sig, which signed the old manifest" in out
    policy = TrustPolicy.from_key_file(f"{key}.pub", require_signed=True)
    report = verify_package(package, read_manifest(package), policy, "tiny/1")
    assert report.files_verified and report.signed_by is not None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sign"], "give PACKAGE_DIR and --key PRIVATE_KEY_PEM"),
        (["sign", "{package}"], "nothing to do for"),
        (["sign", "{tmp}/nope", "--key", "{tmp}/k"], "is not a package directory"),
        (["sign", "{package}", "--key", "{tmp}/k.pub"], "is not a PEM private key"),
        (["sign", "{package}", "--key", "{tmp}/missing"], "does not exist"),
        (["sign", "{package}", "--generate-key", "{tmp}/k2"], "takes no other arguments"),
        (["sign", "{tmp}", "--key", "{tmp}/k"], "no manifest.json"),
    ],
)
def test_bad_invocations_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert main(["sign", "--generate-key", str(tmp_path / "k")]) == 0
    package = _package(tmp_path)
    capsys.readouterr()
    filled = [a.format(package=package, tmp=tmp_path) for a in argv]
    assert main(filled) == 1
    err = capsys.readouterr().err
    assert err.startswith("care-serve sign: error: ") and says in err, err
    assert len(err.strip().splitlines()) == 1


def test_serve_refuses_to_start_without_a_usable_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = ["--http-port", "0", "--grpc-port", "0", "--model-store", str(tmp_path)]
    assert main(["serve", *ports, "--require-signed-packages"]) == 1
    assert "require_signed_packages needs package_public_key" in capsys.readouterr().err
    missing = tmp_path / "nope.pub"
    assert main(["serve", *ports, "--package-public-key", str(missing)]) == 1
    assert f"public key {missing} does not exist" in capsys.readouterr().err
    assert main(["sign", "--generate-key", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    private = str(tmp_path / "k")
    assert main(["serve", *ports, "--package-public-key", private]) == 1
    assert "holds a private key; give the public key" in capsys.readouterr().err
