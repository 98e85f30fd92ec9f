"""LUNA16 tables and image lookup (lunglesionai.datasets.luna16)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.datasets.luna16 import (
    ANNOTATION_COLUMNS,
    PREDICTION_COLUMNS,
    Luna16TableError,
    find_images,
    read_annotations,
    read_predictions,
    read_seriesuids,
    write_luna16_csv,
)

UID_A = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
UID_B = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100332161840553388986847034053"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_real_tables():
    folder = shared_path("luna16")
    annotations = read_annotations(folder / "annotations.csv")
    with open(folder / "annotations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(len(a) for a in annotations.values()) == len(rows) == 1186
    assert len(annotations) == len({r["seriesuid"] for r in rows})
    first = rows[0]
    assert np.allclose(annotations[first["seriesuid"]][0],
                       [float(first[c]) for c in ANNOTATION_COLUMNS[1:]])
    assert all(a.shape[1] == 4 and np.all(a[:, 3] > 0) for a in annotations.values())
    uids = read_seriesuids(folder / "seriesuids.csv")
    assert len(uids) == 888 and set(annotations) <= set(uids)
    excluded = read_annotations(folder / "annotations_excluded.csv", allow_unknown_diameter=True)
    diameters = np.concatenate([e[:, 3] for e in excluded.values()])
    assert np.any(diameters == -1) and set(excluded) <= set(uids)
    with pytest.raises(Luna16TableError, match=r"annotations_excluded\.csv: row \d+, column diameter_mm"):
        read_annotations(folder / "annotations_excluded.csv")


def test_grouping_keeps_file_order(tmp_path):
    path = _write(tmp_path / "a.csv", f"seriesuid,coordX,coordY,coordZ,diameter_mm,extra\n"
                                      f"{UID_B},1,2,3,4,x\n{UID_A},5,6,7,8,y\n{UID_B},-1.5,2e1,0,3.5,z\n")
    table = read_annotations(path)
    assert list(table) == [UID_B, UID_A]
    assert table[UID_B].tolist() == [[1, 2, 3, 4], [-1.5, 20, 0, 3.5]]
    assert read_annotations(_write(tmp_path / "empty.csv", ",".join(ANNOTATION_COLUMNS) + "\n")) == {}


@pytest.mark.parametrize(
    "text, match",
    [
        ("seriesuid,coordX,coordY,diameter_mm\nu,1,2,3\n", r"bad\.csv: missing column\(s\) coordZ"),
        ("seriesuid,coordX,coordY,coordZ,diameter_mm\nu,1,abc,3,4\n", r"bad\.csv: row 2, column coordY: not a number"),
        ("seriesuid,coordX,coordY,coordZ,diameter_mm\nu,1,2,3,4\n,1,2,3,4\n", r"bad\.csv: row 3, column seriesuid"),
        ("seriesuid,coordX,coordY,coordZ,diameter_mm\nu,1,2,3,-1\n", r"row 2, column diameter_mm: must be > 0"),
        ("seriesuid,coordX,coordY,coordZ,diameter_mm\nu,1,2,nan,4\n", r"row 2, column coordZ: not finite"),
    ],
)
def test_annotation_errors_name_file_row_and_column(tmp_path, text, match):
    with pytest.raises(Luna16TableError, match=match):
        read_annotations(_write(tmp_path / "bad.csv", text))


def test_missing_table(tmp_path):
    with pytest.raises(Luna16TableError, match="no such table"):
        read_annotations(tmp_path / "absent.csv")
    with pytest.raises(Luna16TableError, match="no such table"):
        read_seriesuids(tmp_path / "absent.csv")


def test_predictions(tmp_path):
    path = _write(tmp_path / "p.csv", f"seriesuid,coordX,coordY,coordZ,probability\n{UID_A},1,2,3,0.5\n"
                                      f"{UID_A},4,5,6,-2\n")
    assert read_predictions(path)[UID_A].tolist() == [[1, 2, 3, 0.5], [4, 5, 6, -2]]
    with pytest.raises(Luna16TableError, match="missing column.*probability"):
        read_predictions(_write(tmp_path / "q.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm\nu,1,2,3,4\n"))


def test_seriesuids(tmp_path):
    assert read_seriesuids(_write(tmp_path / "s.csv", f"{UID_A}\n{UID_B}\n")) == [UID_A, UID_B]
    assert read_seriesuids(_write(tmp_path / "h.csv", f"seriesuid\n{UID_B}\n")) == [UID_B]
    with pytest.raises(Luna16TableError, match=r"row 3: seriesuid .* repeats row 1"):
        read_seriesuids(_write(tmp_path / "d.csv", f"{UID_A}\n{UID_B}\n{UID_A}\n"))
    with pytest.raises(Luna16TableError, match="row 2, column 1"):
        read_seriesuids(_write(tmp_path / "e.csv", f"{UID_A}\n\n"))
    with pytest.raises(Luna16TableError, match="no seriesuid"):
        read_seriesuids(_write(tmp_path / "n.csv", "seriesuid\n"))


def test_find_images(tmp_path):
    (tmp_path / "subset0").mkdir()
    (tmp_path / "subset3").mkdir()
    (tmp_path / "other").mkdir()
    for name in ["subset0/a.mhd", "subset0/a.raw", "b.nii.gz", "c.nrrd", "subset3/d.mhd", "a.nii.gz", "notes.txt",
                 "other/e.mhd", ".hidden.mhd", "f.nii", "g.mha"]:
        (tmp_path / name).write_bytes(b"")
    found = find_images(tmp_path)
    assert found == {"a": tmp_path / "subset0/a.mhd", "b": tmp_path / "b.nii.gz", "c": tmp_path / "c.nrrd",
                     "d": tmp_path / "subset3/d.mhd", "f": tmp_path / "f.nii", "g": tmp_path / "g.mha"}
    assert find_images(tmp_path, ["b", "d", "zzz"]) == {"b": tmp_path / "b.nii.gz", "d": tmp_path / "subset3/d.mhd"}
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "absent")
    with pytest.raises(NotADirectoryError):
        find_images(tmp_path / "notes.txt")


def test_write_round_trip_and_atomic(tmp_path):
    rows = [(UID_A, 1.25, -2.0, 3.0, 6.5), (UID_B, 0.1, 0.2, 0.3, 4.0)]
    path = write_luna16_csv(tmp_path / "annotations.csv", rows)
    assert {k: v.tolist() for k, v in read_annotations(path).items()} == {UID_A: [[1.25, -2.0, 3.0, 6.5]],
                                                                          UID_B: [[0.1, 0.2, 0.3, 4.0]]}
    write_luna16_csv(tmp_path / "p.csv", [(UID_A, 1, 2, 3, 0.75)], PREDICTION_COLUMNS)
    assert read_predictions(tmp_path / "p.csv")[UID_A].tolist() == [[1, 2, 3, 0.75]]
    with pytest.raises(ValueError, match="row 1 has 4 fields"):
        write_luna16_csv(tmp_path / "bad.csv", [(UID_A, 1, 2, 3)])
    with pytest.raises(ValueError, match="non-finite"):
        write_luna16_csv(tmp_path / "bad.csv", [(UID_A, 1, 2, 3, float("nan"))])
    with pytest.raises(FileNotFoundError):
        write_luna16_csv(tmp_path / "absent" / "a.csv", rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.csv", "p.csv"]
