"""LIDC-IDRI reader XML with its DICOM series (lunglesionai.datasets.lidc_xml): marks in LPS mm, clustering across
readers, consensus, LUNA16 rows, errors; on a hand-written XML over a synthetic series and on the two real slabs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import shared_path
from dicom_fixtures import PIXEL_SPACING, write_series
from lunglesionai.datasets.lidc_xml import (
    RATING_NAMES,
    LidcXmlError,
    find_lidc_scans,
    luna16_rows,
    read_lidc_scan,
)

XY = (-20.0, 30.0)  # ImagePositionPatient x, y of the synthetic series
Z_SLICES = [2.0 * n for n in range(12)]  # 0, 2, ..., 22 mm
ROW_MM, COL_MM = PIXEL_SPACING


def square(c0: int, r0: int, c1: int, r1: int) -> list[tuple[int, int]]:
    """Outline points (column, row) of a square, corners only (the reader's polygon)."""
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]


def nodule_xml(mark_id: str, outlines: dict, malignancy: int | None = 3, uids: dict | None = None) -> str:
    """One unblindedReadNodule: outlines z -> points; ratings all = malignancy (None: no characteristics)."""
    rois = "".join(
        f"<roi><imageZposition>{z:.6f}</imageZposition><imageSOP_UID>{(uids or {}).get(z, '9.9.' + str(z))}"
        f"</imageSOP_UID><inclusion>TRUE</inclusion>"
        + "".join(f"<edgeMap><xCoord>{c}</xCoord><yCoord>{r}</yCoord></edgeMap>" for c, r in points) + "</roi>"
        for z, points in outlines.items())
    chars = "" if malignancy is None else "<characteristics>" + "".join(
        f"<{name}>{malignancy}</{name}>" for name in RATING_NAMES) + "</characteristics>"
    return f"<unblindedReadNodule><noduleID>{mark_id}</noduleID>{chars}{rois}</unblindedReadNodule>"


def non_nodule_xml(mark_id: str, z: float, c: int, r: int) -> str:
    return (f"<nonNodule><nonNoduleID>{mark_id}</nonNoduleID><imageZposition>{z}</imageZposition><imageSOP_UID>x"
            f"</imageSOP_UID><locus><xCoord>{c}</xCoord><yCoord>{r}</yCoord></locus></nonNodule>")


def lidc_xml(sessions: list[list[str]], series_uid: str = "", namespace: bool = True) -> str:
    ns = ' xmlns="http://www.nih.gov"' if namespace else ""
    header = f"<ResponseHeader><SeriesInstanceUid>{series_uid}</SeriesInstanceUid></ResponseHeader>"
    body = "".join(f"<readingSession><servicingRadiologistID>r{n}</servicingRadiologistID>{''.join(marks)}"
                   "</readingSession>" for n, marks in enumerate(sessions))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage{ns}>{header}{body}</LidcReadMessage>'


A = {z: square(18, 18, 24, 24) for z in (8.0, 10.0, 12.0)}  # nodule A, reader 1
A_SHIFTED = {z: square(19, 19, 25, 25) for z in (8.0, 10.0, 12.0)}  # reader 2
A_SMALLER = {z: square(20, 20, 23, 23) for z in (10.0, 12.0, 14.0)}  # reader 3


def sessions_of_the_fixture() -> list[list[str]]:
    return [
        [nodule_xml("A1", A, 3), nodule_xml("B1", {4.0: square(6, 28, 9, 31)}, 2),
         nodule_xml("C1", {100.0: square(5, 5, 8, 8)}, 1)],
        [nodule_xml("A2", A_SHIFTED, 4), nodule_xml("s2", {16.0: [(30, 8)]}, None)],
        [nodule_xml("A3", A_SMALLER, 5), non_nodule_xml("n3", 20.0, 5, 5)],
    ]


@pytest.fixture
def series(tmp_path) -> tuple[Path, str]:
    folder = tmp_path / "scan1"
    uid = write_series(folder, Z_SLICES, xy=XY, shape=(40, 40))
    return folder, uid


def write_xml(folder: Path, text: str, name: str = "001.xml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def expected_consensus(*outline_sets: dict) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: filled squares (boundary included) per reader, votes >= half; (z, row, col) voxels."""
    votes: dict[tuple, int] = {}
    for outlines in outline_sets:
        for z, points in outlines.items():
            (c0, r0), (c1, _), (_, r1) = points[0], points[1], points[2]
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    votes[(z, r, c)] = votes.get((z, r, c), 0) + 1
    voxels = np.array([v for v, n in votes.items() if n >= len(outline_sets) / 2], dtype=float)
    lps = np.stack([XY[0] + voxels[:, 2] * COL_MM, XY[1] + voxels[:, 1] * ROW_MM, voxels[:, 0]], axis=1)
    return voxels, lps


@pytest.mark.parametrize("namespace", [True, False])
def test_marks_are_placed_in_lps_and_clustered_across_readers(series, namespace):
    folder, uid = series
    write_xml(folder, lidc_xml(sessions_of_the_fixture(), uid, namespace))
    scan = read_lidc_scan(folder)
    assert scan.series_uid == uid and scan.n_sessions == 3
    assert len(scan.marks) == 5 and len(scan.small_nodules) == 1 and len(scan.non_nodules) == 1
    small, non = scan.small_nodules[0], scan.non_nodules[0]
    np.testing.assert_allclose(small.point_lps_mm, [XY[0] + 30 * COL_MM, XY[1] + 8 * ROW_MM, 16.0])
    np.testing.assert_allclose(non.point_lps_mm, [XY[0] + 5 * COL_MM, XY[1] + 5 * ROW_MM, 20.0])
    assert small.slice_index == Z_SLICES.index(16.0) and non.slice_index == Z_SLICES.index(20.0)
    assert [n.n_readers for n in scan.clusters] == [3, 1, 1]
    a = scan.nodules(min_readers=2)
    assert len(a) == 1 and sorted(m.mark_id for m in a[0].marks) == ["A1", "A2", "A3"]
    assert a[0].ratings["malignancy"] == pytest.approx(4.0) and a[0].ratings["subtlety"] == pytest.approx(4.0)
    voxels, lps = expected_consensus(A, A_SHIFTED, A_SMALLER)
    np.testing.assert_allclose(a[0].center_lps_mm, lps.mean(axis=0), atol=1e-6)
    diameter = (6 * len(voxels) * ROW_MM * COL_MM * 2.0 / math.pi) ** (1 / 3)
    assert a[0].diameter_mm == pytest.approx(diameter)
    outside = [m for m in scan.marks if m.mark_id == "C1"][0]
    assert outside.outlines[0].slice_index is None and outside.center_lps_mm[2] == pytest.approx(100.0)


def test_one_reader_gives_at_most_one_mark_per_nodule(series):
    folder, uid = series
    twice = [[nodule_xml("A1", A, 3), nodule_xml("A1bis", A_SHIFTED, 3)], [nodule_xml("A2", A_SMALLER, 3)]]
    write_xml(folder, lidc_xml(twice, uid))
    scan = read_lidc_scan(folder)
    assert sorted(n.n_readers for n in scan.clusters) == [1, 2]
    for nodule in scan.clusters:
        readers = [m.reader for m in nodule.marks]
        assert len(readers) == len(set(readers))


def test_consensus_mask_on_the_loaded_volume(series):
    folder, uid = series
    write_xml(folder, lidc_xml(sessions_of_the_fixture(), uid))
    scan = read_lidc_scan(folder)
    volume = scan.load_volume()
    mask = scan.consensus_mask(scan.nodules(2)[0], volume)
    voxels, _ = expected_consensus(A, A_SHIFTED, A_SMALLER)
    expected = np.zeros(volume.shape_zyx, bool)
    expected[(voxels[:, 0] / 2).astype(int), voxels[:, 1].astype(int), voxels[:, 2].astype(int)] = True
    np.testing.assert_array_equal(mask, expected)


def test_marks_are_matched_by_sop_uid_before_z(series):
    folder, uid = series
    by_z = {float(ds.ImagePositionPatient[2]): str(ds.SOPInstanceUID)
            for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm"))}
    # the XML's z is wrong by 3 mm on purpose: the SOP UID decides the slice
    write_xml(folder, lidc_xml([[nodule_xml("A", {13.0: square(18, 18, 24, 24)}, 3, uids={13.0: by_z[6.0]})]], uid))
    scan = read_lidc_scan(folder)
    assert scan.marks[0].outlines[0].slice_index == Z_SLICES.index(6.0)


def test_luna16_rows_split_reference_and_excluded(series):
    folder, uid = series
    write_xml(folder, lidc_xml(sessions_of_the_fixture(), uid))
    scan = read_lidc_scan(folder)
    annotations, excluded = luna16_rows(scan, min_readers=2)
    assert [r[0] for r in annotations] == [uid] and annotations[0][4] == pytest.approx(scan.clusters[0].diameter_mm)
    assert len(excluded) == 4  # B and C (1 reader), the small nodule and the non-nodule
    assert sorted(r[4] for r in excluded)[:2] == [-1.0, -1.0]
    all_kept, none_excluded = luna16_rows(scan, min_readers=1)
    assert len(all_kept) == 3 and len(none_excluded) == 2


def test_find_lidc_scans(series, tmp_path):
    folder, uid = series
    write_xml(folder, lidc_xml(sessions_of_the_fixture(), uid))
    (tmp_path / "not_a_scan").mkdir()
    assert find_lidc_scans(tmp_path) == [folder]
    assert find_lidc_scans(folder) == [folder]
    with pytest.raises(FileNotFoundError, match="no LIDC scan"):
        find_lidc_scans(tmp_path / "not_a_scan")


@pytest.mark.parametrize("text, message", [
    ("<LidcReadMessage><readingSession>", "not well-formed XML"),
    ("<Other/>", "not an LIDC reader XML"),
    (lidc_xml([[nodule_xml("A", {8.0: square(1, 1, 3, 3)}, 3).replace("<malignancy>3", "<malignancy>high")]]),
     "rating malignancy is 'high'"),
    (lidc_xml([[nodule_xml("A", {8.0: [(1, 1)]}, 3).replace("<xCoord>1</xCoord>", "<xCoord>one</xCoord>")]]),
     "xCoord is 'one'"),
    (lidc_xml([[nodule_xml("A", {9.0: square(1, 1, 3, 3)}, 3)]]), "between the slices"),
    (lidc_xml([[nodule_xml("A", {300.0: square(1, 1, 3, 3)}, 3)]]), "none of its marked slices"),
    (lidc_xml([[nodule_xml("A", {8.0: square(1, 1, 3, 3)}, 3)]], series_uid="1.2.3.999"), "belongs to series"),
])
def test_bad_xml_is_refused_naming_the_file(series, text, message):
    folder, _ = series
    path = write_xml(folder, text, "bad.xml")
    with pytest.raises(LidcXmlError, match=message) as error:
        read_lidc_scan(folder)
    assert str(path) in str(error.value)


def test_a_folder_needs_exactly_one_xml(series):
    folder, uid = series
    with pytest.raises(LidcXmlError, match="found 0"):
        read_lidc_scan(folder)
    write_xml(folder, lidc_xml([], uid), "1.xml")
    write_xml(folder, lidc_xml([], uid), "2.xml")
    with pytest.raises(LidcXmlError, match="found 2"):
        read_lidc_scan(folder)


def test_real_slab_0001_four_reader_nodule():
    scan = read_lidc_scan(shared_path("lidc_slabs", "LIDC-IDRI-0001"))
    assert scan.n_sessions == 4
    four = scan.nodules(min_readers=4)
    assert len(four) == 1
    nodule = four[0]
    assert sorted(m.reader for m in nodule.marks) == [0, 1, 2, 3]
    volume = scan.load_volume()
    k = volume.lps_to_kji([nodule.center_lps_mm])[0]
    assert np.all(k >= 0) and np.all(k <= np.asarray(volume.shape_zyx) - 1), "centre inside the slab"
    assert 18.0 <= nodule.diameter_mm <= 35.0
    assert nodule.ratings["malignancy"] >= 4.0
    assert scan.consensus_mask(nodule, volume).sum() * volume.voxel_volume_mm3 == pytest.approx(nodule.volume_mm3)
    assert scan.small_nodules and scan.non_nodules


def test_real_slab_0002_big_nodule_partly_inside():
    scan = read_lidc_scan(shared_path("lidc_slabs", "LIDC-IDRI-0002"))
    volume = scan.load_volume()
    biggest = max(scan.clusters, key=lambda n: n.diameter_mm)
    assert biggest.diameter_mm > 15.0
    in_slab = scan.consensus_mask(biggest, volume).sum() * volume.voxel_volume_mm3
    assert 0 < in_slab < 0.5 * biggest.volume_mm3, "only part of the nodule lies inside the slab"
    outlines = [o for m in biggest.marks for o in m.outlines]
    assert any(o.slice_index is None for o in outlines) and any(o.slice_index is not None for o in outlines)
