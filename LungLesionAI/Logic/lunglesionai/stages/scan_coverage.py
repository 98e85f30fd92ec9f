"""What an analysis can promise for one scan: the one-line warnings that go into ``Report.warnings``.

A report with no findings must not read as "nothing there" when the scan was not really searched. These checks
run on the analysed volume (reoriented to LPS) and its lung mask, and return plain one-line strings that
report.json, report.html, the CLI summary and the Slicer panel show:

* no lung of plausible size (total lung volume below :data:`MIN_LUNG_VOLUME_ML`): nothing was searched;
* only one lung found: the other side was not analysed (or is outside the scan);
* slices thicker than :data:`THICK_SLICE_MM`: sensitivity for small nodules is reduced. Lung cancer screening
  protocols reconstruct at ≤ 2.5 mm, ≤ 1 mm preferred (ACR–STR practice parameter for screening CT, and the
  Lung-RADS v2022 technical specifications); nodules of 4–6 mm cover one or two 5–10 mm slices and are partly
  averaged away (partial-volume effect), so they are analysed with a warning, never refused.
"""

from __future__ import annotations

import numpy as np

from lunglesionai.core.vocabulary import NO_LUNG_WARNING
from lunglesionai.core.volume import Volume

__all__ = ["LUNG_CUT_MIN_AREA_MM2", "MIN_LUNG_VOLUME_ML", "NO_LUNG_WARNING", "THICK_SLICE_MM", "lungs_fully_covered",
           "result_summary", "scan_warnings"]

MIN_LUNG_VOLUME_ML = 20.0
"""Least total lung volume (mL) that counts as "lung found": a few slices through the lung bases hold 100 mL or
more; a scan outside the chest (head, pelvis) holds none."""
THICK_SLICE_MM = 3.0
"""Slice spacing (mm) above which the thick-slice warning is given (screening protocols use ≤ 2.5 mm)."""
LUNG_CUT_MIN_AREA_MM2 = 100.0
"""A lung whose cross-section on one of the volume's six faces covers at least this area (mm²) is cut by the scan's
edge (a lung apex or base reached by the first or last slice, or a field of view narrower than the chest)."""
_SIDE_NAMES = {1: "right", 2: "left"}


def scan_warnings(volume: Volume, lung_labels: np.ndarray) -> list[str]:
    """One-line warnings about what the analysis of ``volume`` could not cover.

    Args:
        volume: the CT as analysed, in LPS orientation (axis k runs inferior→superior), HU; ``spacing_mm`` (x, y, z).
        lung_labels: (Z, Y, X) lung labels on ``volume``'s grid: 0 background, 1 right lung, 2 left lung
            (:func:`lunglesionai.stages.lung_mask.segment_lungs`).

    Returns:
        Warnings in a fixed order (lungs, then slices); empty when there is nothing to say.

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.

    Example:
        >>> from lunglesionai.synth import PhantomConfig, make_phantom   # doctest: +SKIP
        >>> scan_warnings(phantom.volume, segment_lungs(phantom.volume))  # doctest: +SKIP
        []
    """
    if tuple(lung_labels.shape) != tuple(volume.shape_zyx):
        raise ValueError(f"lung labels of shape {lung_labels.shape} are not on the volume's grid {volume.shape_zyx}")
    warnings = []
    volumes_ml = _lung_volumes_ml(volume, lung_labels)
    total_ml = sum(volumes_ml.values())
    if total_ml < MIN_LUNG_VOLUME_ML:
        warnings.append(f"{NO_LUNG_WARNING} ({total_ml:.0f} mL of lung segmented): the scan was not searched for "
                        "nodules; an empty findings list is not a negative result")
    else:
        missing = [name for label, name in _SIDE_NAMES.items() if volumes_ml[label] < MIN_LUNG_VOLUME_ML / 2]
        if missing:
            warnings.append(f"only one lung found: the {missing[0]} lung was not analysed (outside the scan, or "
                            "not separable from the other lung)")
        else:
            cut = _cut_faces(volume, lung_labels)
            if cut:
                warnings.append(f"lungs cut by the scan's edge ({', '.join(cut)}): the lungs are not fully imaged, "
                                "the part outside was not searched (Lung-RADS category 0)")
    slice_mm = float(volume.spacing_mm[2])
    if slice_mm > THICK_SLICE_MM:
        warnings.append(f"slices {slice_mm:.1f} mm apart (thicker than {THICK_SLICE_MM:g} mm): sensitivity for "
                        "small nodules is reduced and sizes are less accurate")
    return warnings


def lungs_fully_covered(volume: Volume, lung_labels: np.ndarray) -> bool:
    """Whether the scan holds both lungs whole: False when :func:`scan_warnings` finds no lung or only one, or when
    a lung is cut by the volume's edge (:data:`LUNG_CUT_MIN_AREA_MM2` of it on a face of the volume).

    Lung-RADS v2022 gives category 0 to an exam whose lungs are not fully imaged; the clinical read takes this
    flag (``Report.exam["lungs_fully_covered"]``) for that.

    Args:
        volume: the CT as analysed (LPS orientation), ``spacing_mm`` (x, y, z).
        lung_labels: (Z, Y, X) lung labels on ``volume``'s grid (0 background, 1 right, 2 left).

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.

    Example:
        >>> lungs_fully_covered(phantom.volume, segment_lungs(phantom.volume))   # doctest: +SKIP
        True
    """
    if tuple(lung_labels.shape) != tuple(volume.shape_zyx):
        raise ValueError(f"lung labels of shape {lung_labels.shape} are not on the volume's grid {volume.shape_zyx}")
    if min(_lung_volumes_ml(volume, lung_labels).values()) < MIN_LUNG_VOLUME_ML / 2:
        return False  # no lung, or one lung missing (the conditions of scan_warnings)
    return not _cut_faces(volume, lung_labels)


def _cut_faces(volume: Volume, lung_labels: np.ndarray) -> list[str]:
    """Names of the volume's faces (LPS: "inferior", "superior", "anterior", "posterior", "right", "left") that
    cut the lungs (at least :data:`LUNG_CUT_MIN_AREA_MM2` of lung on the face)."""
    sx, sy, sz = (float(v) for v in volume.spacing_mm)
    lung = np.asarray(lung_labels) != 0
    faces = (("inferior", lung[0], sx * sy), ("superior", lung[-1], sx * sy), ("anterior", lung[:, 0], sx * sz),
             ("posterior", lung[:, -1], sx * sz), ("right", lung[:, :, 0], sy * sz), ("left", lung[:, :, -1], sy * sz))
    return [name for name, face, area in faces if np.count_nonzero(face) * area >= LUNG_CUT_MIN_AREA_MM2]


def _lung_volumes_ml(volume: Volume, lung_labels: np.ndarray) -> dict[int, float]:
    """Volume (mL) of each lung label."""
    voxel_ml = volume.voxel_volume_mm3 / 1000.0
    return {label: float(np.count_nonzero(lung_labels == label)) * voxel_ml for label in _SIDE_NAMES}


def result_summary(n_findings: int, warnings: list[str]) -> str:
    """The one-paragraph result for people (the Slicer panel's status line): the finding count, or "not searched"
    when no lung was found, followed by every warning.

    Args:
        n_findings: number of findings in the report.
        warnings: ``Report.warnings``.

    Example:
        >>> result_summary(0, ["no lung of plausible size found (0 mL of lung segmented): …"])[:13]
        'Not searched:'
    """
    if any(w.startswith(NO_LUNG_WARNING) for w in warnings):
        head = "Not searched: no lung of plausible size was found in this scan (not a negative result)."
    else:
        head = f"Found {n_findings} finding(s). Click a row to go to a finding."
    return head + "".join(f"\nWarning: {w}" for w in warnings)
