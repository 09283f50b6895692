"""The API key file: hashes only, scopes, rates, clear errors, re-read on change."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from care_serve.cli import main
from care_serve.security.keys import KEY_PREFIX, KeyFile, KeyFileError, KeyRing, hash_key


def test_a_key_is_stored_as_its_hash_and_found_by_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    file = KeyFile()
    key = file.add("camera-1", "infer", rate=2.5)
    file.write(path)
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ring = KeyRing(path)
    entry = ring.lookup(key)
    assert entry is not None and (entry.name, entry.scope, entry.rate) == ("camera-1", "infer", 2.5)
    assert ring.lookup(key + "x") is None
    assert not ring.has_scope("admin")


def test_two_keys_are_never_equal() -> None:
    file = KeyFile()
    assert file.add("a", "infer") != file.add("b", "infer")


def test_names_are_unique_and_revoke_names_the_known_keys(tmp_path: Path) -> None:
    file = KeyFile()
    file.add("a", "admin")
    with pytest.raises(KeyFileError, match="a key named 'a' exists"):
        file.add("a", "infer")
    with pytest.raises(KeyFileError, match=r"no key named 'b' \(keys: a\)"):
        file.revoke("b")
    with pytest.raises(KeyFileError, match="invalid key name"):
        file.add("has space", "infer")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "is not a care-serve key file"),
        ('{"version": 1, "keys": [{"name": "a", "scope": "root", "sha256": "00"}]}', "scope"),
        ('{"version": 2, "keys": []}', "version"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message) as info:
        KeyFile.read(path)
    assert str(path) in str(info.value)


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="care-serve keys add NAME"):
        KeyFile.read(tmp_path / "none.json")


def test_the_ring_rereads_a_changed_file_and_keeps_the_old_keys_if_it_turns_bad(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    file = KeyFile()
    first = file.add("first", "infer")
    file.write(path)
    ring = KeyRing(path, check_s=0.0)
    second = file.add("second", "admin")
    file.write(path)
    assert ring.lookup(second) is not None and ring.has_scope("admin")
    path.write_text("{broken")
    assert ring.lookup(first) is not None  # the last good keys stay


def test_keys_command_adds_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "keys.json")
    assert (
        main(["keys", "add", "camera-1", "--scope", "infer", "--rate", "5", "--api-keys", path])
        == 0
    )
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith(KEY_PREFIX) and "shown only now" in err
    assert main(["keys", "add", "ops", "--scope", "admin", "--api-keys", path]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--api-keys", path]) == 0
    listing = capsys.readouterr().out
    assert "camera-1\tscope=infer\trate=5/s" in listing and "ops\tscope=admin" in listing
    assert key not in listing
    assert main(["keys", "revoke", "camera-1", "--api-keys", path]) == 0
    assert [k["name"] for k in json.loads(Path(path).read_text())["keys"]] == ["ops"]
    assert main(["keys", "revoke", "camera-1", "--api-keys", path]) == 1
    assert "no key named 'camera-1'" in capsys.readouterr().err


def test_keys_command_reads_the_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env-keys.json"
    monkeypatch.setenv("CARE_SERVE_API_KEYS_FILE", str(path))
    assert main(["keys", "add", "cam"]) == 0
    assert KeyFile.read(path).keys[0].scope == "infer"
