"""Tests of lunglesionai.core.output_folder's single-file writers: write_file_atomic and write_json_atomic.

(The atomic output *folder* and its manifest are exercised through the commands in Testing/io/test_outputs.py and
Testing/app/test_cli_safety.py.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lunglesionai.core.findings import to_jsonable
from lunglesionai.core.output_folder import (
    MANIFEST_NAME,
    read_manifest,
    record_in_manifest,
    write_file_atomic,
    write_json_atomic,
)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_file_is_written_through_a_hidden_temporary_name_in_the_same_folder(tmp_path):
    seen = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        assert not (tmp_path / "notes.txt").exists()  # nothing at the target while writing
        tmp.write_text("done\n", encoding="utf-8")

    assert write_file_atomic(tmp_path / "notes.txt", writer) == tmp_path / "notes.txt"
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "done\n"
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".notes.") and tmp.name.endswith(".tmp.txt")
    assert _entries(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("name, suffix", [("ct.nii.gz", ".nii.gz"), ("ct.nrrd", ".nrrd"), ("cache.npz", ".npz"),
                                          ("1.2.840.json", ".json"), ("model", "")])
def test_temporary_name_keeps_the_suffix(tmp_path, name, suffix):
    seen = []
    write_file_atomic(tmp_path / name, lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"))
    assert seen[0].name.endswith(f".tmp{suffix}")
    assert seen[0].name.startswith(f".{name[: len(name) - len(suffix)]}.")


def test_explicit_suffix_is_kept_and_checked(tmp_path):
    seen = []
    write_file_atomic(tmp_path / "a.b.nii.gz", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"),
                      suffix=".b.nii.gz")
    assert seen[0].name.startswith(".a.") and seen[0].name.endswith(".tmp.b.nii.gz")
    with pytest.raises(ValueError, match="not a suffix"):
        write_file_atomic(tmp_path / "a.json", lambda tmp: tmp.write_bytes(b"x"), suffix=".nrrd")
    assert _entries(tmp_path) == ["a.b.nii.gz"]


def test_writers_that_choose_the_format_by_the_extension_work(tmp_path):
    # numpy.savez appends ".npz" to a name without it: the kept suffix makes it write the temporary file itself
    write_file_atomic(tmp_path / "cache.npz", lambda tmp: np.savez(tmp, a=np.arange(3)))
    with np.load(tmp_path / "cache.npz") as data:
        np.testing.assert_array_equal(data["a"], np.arange(3))
    assert _entries(tmp_path) == ["cache.npz"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_or_interrupted_write_removes_the_temporary_file_and_keeps_the_old_one(tmp_path, error):
    target = tmp_path / "metrics.json"
    target.write_text("old", encoding="utf-8")

    def writer(tmp: Path) -> None:
        tmp.write_text("half a fi", encoding="utf-8")
        raise error

    with pytest.raises(type(error)):
        write_file_atomic(target, writer)
    assert target.read_text(encoding="utf-8") == "old"
    assert _entries(tmp_path) == ["metrics.json"]


def test_failed_first_write_leaves_nothing(tmp_path):
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        write_file_atomic(tmp_path / "ct.nii.gz", writer)
    assert _entries(tmp_path) == []


def test_existing_file_is_replaced_on_success(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    write_file_atomic(target, lambda tmp: tmp.write_text("new", encoding="utf-8"))
    assert target.read_text(encoding="utf-8") == "new"
    assert _entries(tmp_path) == ["report.html"]


def test_writer_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        write_file_atomic(target, lambda tmp: None)
    assert target.read_text(encoding="utf-8") == "old"
    assert _entries(tmp_path) == ["x.txt"]


def test_missing_folder_is_an_error(tmp_path):
    called = []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_file_atomic(tmp_path / "no" / "x.txt", called.append)
    assert not called and _entries(tmp_path) == []


def test_json_default_format_is_indent_2_with_a_trailing_newline(tmp_path):
    data = {"b": [1, 2.5], "a": None, "name": "Lunge ü"}
    write_json_atomic(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert text == json.dumps(data, indent=2) + "\n"
    write_json_atomic(tmp_path / "m.json", data, indent=None, trailing_newline=False)
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == json.dumps(data)
    assert _entries(tmp_path) == ["m.json"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_json_refuses_nan_and_keeps_the_old_file(tmp_path, value):
    target = tmp_path / "m.json"
    target.write_text("{}\n", encoding="utf-8")
    with pytest.raises(ValueError):
        write_json_atomic(target, {"sensitivity": [0.5, value]})
    assert target.read_text(encoding="utf-8") == "{}\n"
    assert _entries(tmp_path) == ["m.json"]


def test_json_nan_as_null_only_when_the_caller_converts(tmp_path):
    write_json_atomic(tmp_path / "m.json", to_jsonable({"sensitivity": math.nan, "n": np.int64(3)}, nan_as_none=True))
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == {"sensitivity": None, "n": 3}


def test_json_refuses_values_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "m.json", {"a": np.arange(2)})
    assert _entries(tmp_path) == []


def test_manifest_is_written_atomically_with_its_format(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    record_in_manifest(tmp_path, ["config.json"], command="train")
    record_in_manifest(tmp_path, ["weights.pt"], command="train")
    assert read_manifest(tmp_path) == {"config.json", "weights.pt"}
    text = (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8")
    document = {"schema": "lunglesionai-manifest/1", "command": "train", "files": ["config.json", "weights.pt"]}
    assert text == json.dumps(document, indent=1) + "\n"
    assert _entries(tmp_path) == sorted([MANIFEST_NAME, "config.json"])
