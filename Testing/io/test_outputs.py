"""Tests of lunglesionai.io.outputs: files written by write_outputs, read back through Slicer's own storage nodes.

The grid has an oblique, left-handed direction and a non-zero origin, so LPS/RAS mix-ups, axis-order (z, y, x) vs
(i, j, k) bugs and transposed direction matrices all move the read-back centres away from the findings' centres.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from conftest import SHARED
from lunglesionai.core.findings import Finding, FindingMask, InputInfo, Report
from lunglesionai.core.output_folder import (
    MANIFEST_NAME,
    OutputPathError,
    read_manifest,
)
from lunglesionai.io import outputs as export
from lunglesionai.io.outputs import (
    markups_fiducial_dict,
    markups_roi_dict,
    segmentation_dict,
    write_outputs,
)
from report_fixtures import (
    LESION_TERMINOLOGY,
    NODULE_TERMINOLOGY,
    SHAPE_ZYX,
    grid_volume,
    make_small_report,
    sphere_finding,
)

MARKUPS_SCHEMA = SHARED / "schemas" / "markups-schema-v1.0.3.json"


@pytest.fixture(scope="module")
def slicer_scene():
    """A slicer-core scene set up for reading segmentations and markups."""
    import slicer  # slicer-core (requirements-dev.txt)
    from lunglesionai.mrml.scene import setup_scene_for_lunglesionai

    scene = slicer.vtkMRMLScene()
    setup_scene_for_lunglesionai(scene)
    return scene


def _read_segmentation(scene, path: Path):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node


def _segment_tag(segment, name: str) -> str | None:
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def _lps(ras) -> np.ndarray:
    """RAS -> LPS written out here, independently of lunglesionai.mrml.scene."""
    x, y, z = ras
    return np.array([-x, -y, z])


@pytest.fixture
def written(tmp_path):
    report = make_small_report()
    return report, write_outputs(report, tmp_path / "out"), tmp_path


def test_write_outputs_writes_expected_files(written):
    _, paths, tmp_path = written
    out = tmp_path / "out"
    expected = {"nodules.seg.nrrd", "nodules.mrk.json", "report.json", "findings.csv", "lesions.seg.nrrd",
                "lesions.mrk.json"}
    assert {p.name for p in out.iterdir()} == expected | {MANIFEST_NAME}
    assert read_manifest(out) == expected
    assert set(paths) == {"nodules_segmentation", "nodules_markups", "report", "findings_csv", "lesions_segmentation",
                          "lesions_markups"}
    assert all(p.parent == out.absolute() and p.is_file() for p in paths.values())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir would make it, not mkdtemp's 0700


def test_no_lesion_files_without_lesions(tmp_path):
    paths = write_outputs(make_small_report(with_lesion=False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME, "findings.csv", "nodules.mrk.json",
                                                                    "nodules.seg.nrrd", "report.json"]
    assert set(paths) == {"nodules_segmentation", "nodules_markups", "report", "findings_csv"}


def test_lesions_without_masks_get_boxes_only(tmp_path):
    report = make_small_report()
    report.findings[-1] = replace(report.findings[-1], mask=None)
    paths = write_outputs(report, tmp_path / "out")
    assert "lesions_markups" in paths and "lesions_segmentation" not in paths
    assert not (tmp_path / "out" / "lesions.seg.nrrd").exists()


def test_segmentation_reads_back_in_slicer(written, slicer_scene):
    from lunglesionai.mrml.scene import (
        reference_image_geometry_string,
        segment_centroids_lps,
    )

    report, paths, _ = written
    node = _read_segmentation(slicer_scene, paths["nodules_segmentation"])
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    assert ids == ["N1", "N2"]  # N3 has no mask, the lesion goes to lesions.seg.nrrd
    segments = [segmentation.GetSegment(i) for i in ids]
    assert [s.GetName() for s in segments] == ["Nodule 1", "Nodule 2"]
    assert all(_segment_tag(s, "TerminologyEntry") == NODULE_TERMINOLOGY for s in segments)
    assert [_segment_tag(s, "LungLesionAI.FindingID") for s in segments] == ["N1", "N2"]
    assert all(_segment_tag(s, "Segmentation.Status") == "inprogress" for s in segments)
    assert segments[0].GetColor() != segments[1].GetColor()
    geometry = segmentation.GetConversionParameter("Reference image geometry")
    assert geometry == reference_image_geometry_string(report.input)  # Slicer kept the analysed grid
    centroids = segment_centroids_lps(node)
    by_id = {f.id: f for f in report.findings}
    for sid in ids:
        np.testing.assert_allclose(centroids[sid], by_id[sid].center_lps_mm, atol=0.1)


def test_lesion_segmentation_reads_back_in_slicer(written, slicer_scene):
    from lunglesionai.mrml.scene import segment_centroids_lps

    report, paths, _ = written
    node = _read_segmentation(slicer_scene, paths["lesions_segmentation"])
    segment = node.GetSegmentation().GetSegment("L1")
    assert segment.GetName() == "Lesion 1"
    assert _segment_tag(segment, "TerminologyEntry") == LESION_TERMINOLOGY
    np.testing.assert_allclose(segment_centroids_lps(node)["L1"], report.lesions()[0].center_lps_mm, atol=0.1)


def test_segmentation_voxels_match_masks_in_ijk_order(written):
    import slicerio

    report, paths, _ = written
    seg = slicerio.read_segmentation(str(paths["nodules_segmentation"]))
    np.testing.assert_allclose(seg["ijkToLPS"], grid_volume().ijk_to_lps_matrix, atol=1e-9)
    for finding in report.nodules()[:2]:
        expected = np.zeros(SHAPE_ZYX, bool)
        finding.mask.paste_into(expected, True)
        np.testing.assert_array_equal(slicerio.segment_mask(seg, finding.id), expected.T)


def test_overlapping_masks_are_kept_apart(tmp_path, slicer_scene):
    volume = grid_volume()
    a = sphere_finding("N1", "nodule", (8, 10, 10), 4, volume)
    b = sphere_finding("N2", "nodule", (8, 10, 13), 4, volume)  # overlaps N1
    c = sphere_finding("N3", "nodule", (3, 3, 3), 2, volume)
    report = Report(InputInfo.from_volume(volume), [a, b, c])
    seg = segmentation_dict(report.findings, report.input)
    assert seg["voxels"].ndim == 4 and [s["layer"] for s in seg["segments"]] == [0, 1, 0]
    paths = write_outputs(report, tmp_path / "out")
    node = _read_segmentation(slicer_scene, paths["nodules_segmentation"])
    from lunglesionai.mrml.scene import segment_centroids_lps

    centroids = segment_centroids_lps(node)
    for finding in (a, b, c):
        np.testing.assert_allclose(centroids[finding.id], finding.center_lps_mm, atol=0.1)


def test_empty_report_gives_empty_but_valid_files(tmp_path, slicer_scene):
    report = Report(InputInfo.from_volume(grid_volume()))
    paths = write_outputs(report, tmp_path / "out")
    node = _read_segmentation(slicer_scene, paths["nodules_segmentation"])
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    markups = json.loads(paths["nodules_markups"].read_text())
    assert markups["markups"][0]["controlPoints"] == []


def test_fiducials_read_back_through_slicer(written, slicer_scene):
    report, paths, _ = written
    node = slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    storage = slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    storage.SetFileName(str(paths["nodules_markups"]))
    assert storage.ReadData(node)
    nodules = report.nodules()
    assert node.GetNumberOfControlPoints() == len(nodules) == 3
    for n, finding in enumerate(nodules):
        assert node.GetNthControlPointLabel(n) == finding.id
        assert node.GetNthControlPointDescription(n) == finding.summary()
        assert node.GetNthControlPointPositionStatus(n) == node.PositionDefined
        np.testing.assert_allclose(_lps(node.GetNthControlPointPosition(n)), finding.center_lps_mm, atol=1e-6)


def test_lesion_rois_read_back_through_slicer(written, slicer_scene):
    report, paths, _ = written
    logic = slicer_scene._lunglesionai_markups_logic
    first_id = logic.LoadMarkups(str(paths["lesions_markups"]), "lesions")
    roi = slicer_scene.GetNodeByID(first_id)
    assert roi.IsA("vtkMRMLMarkupsROINode")
    (lo, hi) = np.array(report.lesions()[0].bbox_lps_mm)
    np.testing.assert_allclose(_lps(roi.GetCenter()), (lo + hi) / 2, atol=1e-6)
    np.testing.assert_allclose(roi.GetSize(), hi - lo, atol=1e-6)
    assert roi.GetNthControlPointLabel(0) == "L1"


@pytest.mark.parametrize("kind", ["fiducial", "roi", "empty"])
def test_markups_follow_the_slicer_schema(kind):
    if not MARKUPS_SCHEMA.exists():
        pytest.skip("needs ../shared/schemas/markups-schema-v1.0.3.json (absent: a fresh clone has no ../shared)")
    schema = json.loads(MARKUPS_SCHEMA.read_text())
    report = make_small_report()
    data = {"fiducial": lambda: markups_fiducial_dict(report.nodules()),
            "roi": lambda: markups_roi_dict(report.lesions()),
            "empty": lambda: markups_fiducial_dict([])}[kind]()
    jsonschema.validate(data, schema)


def test_markups_reject_non_finite_positions():
    bad = Finding("N1", "nodule", (0.0, float("nan"), 1.0), ((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ValueError, match="N1"):
        markups_fiducial_dict([bad])


def test_report_json_is_valid_and_complete(written):
    report, paths, _ = written
    data = json.loads(paths["report"].read_text())
    back = Report.from_dict(data)  # validates against lunglesionai-report/1
    assert [f.id for f in back.findings] == [f.id for f in report.findings]
    assert back.input == report.input


def test_failure_half_way_leaves_no_output(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(export, "markups_fiducial_dict", broken)
    with pytest.raises(OSError, match="simulated"):
        write_outputs(make_small_report(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    write_outputs(make_small_report(with_lesion=False), out)
    with pytest.raises(FileExistsError, match=str(out)):
        write_outputs(make_small_report(), out)
    assert not (out / "lesions.mrk.json").exists()
    write_outputs(make_small_report(), out, overwrite=True)
    assert (out / "lesions.mrk.json").exists() and (out / "report.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_never_deletes_files_lunglesionai_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("a reader's notes")
    with pytest.raises(OutputPathError, match="no manifest"):
        write_outputs(make_small_report(), out, overwrite=True)
    write_outputs(make_small_report(), tmp_path / "ours")
    (tmp_path / "ours" / "notes.txt").write_text("added by a person after the run")
    with pytest.raises(OutputPathError, match="1 file.*notes.txt"):
        write_outputs(make_small_report(), tmp_path / "ours", overwrite=True)
    assert (out / "notes.txt").exists() and (tmp_path / "ours" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "out"]


def test_failed_overwrite_keeps_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_outputs(make_small_report(with_lesion=False), out)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(export, "markups_roi_dict", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        write_outputs(make_small_report(), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_invalid_report_writes_nothing(tmp_path):
    report = make_small_report()
    report.findings[0] = replace(report.findings[0], detection_score=1.5)
    with pytest.raises(jsonschema.ValidationError):
        write_outputs(report, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_extra_files_are_written_atomically_too(tmp_path):
    paths = write_outputs(make_small_report(), tmp_path / "out",
                          extra_files={"notes.txt": lambda p: p.write_text("hello")})
    assert paths["notes.txt"].read_text() == "hello"
    for bad in ("report.json", "findings.csv", "../x.txt", "a/b.txt", ""):
        with pytest.raises(ValueError):
            write_outputs(make_small_report(), tmp_path / "other", extra_files={bad: lambda p: None})
    assert not (tmp_path / "other").exists()


def test_repeated_finding_ids_are_rejected(tmp_path):
    report = make_small_report()
    report.findings[1] = replace(report.findings[1], id="N1")
    with pytest.raises(ValueError, match="N1"):
        write_outputs(report, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_masks_are_clipped_to_the_grid(tmp_path):
    import slicerio

    report = make_small_report(with_lesion=False)
    ball = report.findings[0].mask.array
    report.findings[0] = replace(report.findings[0], mask=FindingMask((-2, 15, 20), ball))  # out at k<0, i>=26
    report.findings[1] = replace(report.findings[1], mask=FindingMask((0, 0, 0), np.zeros((2, 2, 2), bool)))
    paths = write_outputs(report, tmp_path / "out")
    seg = slicerio.read_segmentation(str(paths["nodules_segmentation"]))
    expected = np.zeros(SHAPE_ZYX, bool)
    report.findings[0].mask.paste_into(expected, True)
    assert 0 < expected.sum() < ball.sum()
    np.testing.assert_array_equal(slicerio.segment_mask(seg, "N1"), expected.T)
    assert not slicerio.segment_mask(seg, "N2").any()  # an empty mask still gets its (empty) segment
