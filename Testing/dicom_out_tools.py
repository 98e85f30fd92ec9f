"""The field's DICOM checkers for the SEG/SR tests: dciodvfy (dicom3tools) and dcmqi, each skipping with the reason
when missing, plus the expected SR numbers of a report.json finding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_VENV_BIN = Path(sys.executable).parent
#: report.json field -> the SR measurement's Code Meaning (lunglesionai.io.dicom_sr).
SR_MEASUREMENTS = {"long_axis_mm": "Long axis", "short_axis_mm": "Short axis", "mean_diameter_mm": "Diameter",
                   "volume_mm3": "Volume", "mean_hu": "Attenuation Coefficient",
                   "malignancy_probability": "Probability of cancer", "brock_risk": "Brock (PanCan) malignancy risk"}


def tool(name: str) -> str:
    """Path of a command-line tool (the venv's bin first), or skip the test saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path=str(_VENV_BIN))
    if found is None:
        source = "apt-get install dicom3tools" if name == "dciodvfy" else "pip install dcmqi"
        pytest.skip(f"{name} not installed ({source}; .ci/run installs it)")
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy prints for a DICOM file (warnings are allowed)."""
    result = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def dcmqi_segments(seg_path: Path, reference) -> dict[str, np.ndarray]:
    """dcmqi ``segimage2itkimage``: the SEG's segments resampled (nearest neighbour) onto ``reference``'s grid.

    Args:
        seg_path: the DICOM SEG.
        reference: a :class:`lunglesionai.core.volume.Volume` or InputInfo-like grid (shape_zyx, spacing_mm,
            origin_lps_mm, direction).

    Returns:
        {TrackingIdentifier: (Z, Y, X) bool mask}.
    """
    import SimpleITK as sitk

    out = seg_path.parent / f"{seg_path.stem}_dcmqi"
    out.mkdir()
    subprocess.run([tool("segimage2itkimage"), "--inputDICOM", str(seg_path), "--outputDirectory", str(out),
                    "-t", "nrrd"], check=True, capture_output=True, timeout=120)
    grid = sitk.Image([int(n) for n in reversed(reference.shape_zyx)], sitk.sitkUInt8)
    grid.SetSpacing(reference.spacing_mm)
    grid.SetOrigin(reference.origin_lps_mm)
    grid.SetDirection(reference.direction)
    meta = json.loads((out / "meta.json").read_text())
    masks = {}
    for file_number, segments in enumerate(meta["segmentAttributes"], start=1):
        image = sitk.ReadImage(str(out / f"{file_number}.nrrd"))
        on_grid = sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        for segment in segments:
            masks[segment["TrackingIdentifier"]] = on_grid == segment["labelID"]
    return masks


def tid1500_json(sr_path: Path) -> dict:
    """dcmqi ``tid1500reader``: the SR as dcmqi's JSON."""
    out = sr_path.parent / f"{sr_path.stem}_dcmqi.json"
    subprocess.run([tool("tid1500reader"), "--inputDICOM", str(sr_path), "--outputMetadata", str(out)], check=True,
                   capture_output=True, timeout=60)
    return json.loads(out.read_text())


def dcmqi_values(group: dict) -> dict[str, float]:
    """{Code Meaning: value} of a dcmqi JSON measurement group."""
    return {item["quantity"]["CodeMeaning"]: float(item["value"]) for item in group["measurementItems"]}


def expected_values(finding: dict) -> dict[str, float]:
    """{Code Meaning: value} the SR must hold for a report.json finding (fields that are not null)."""
    return {meaning: float(finding[key]) for key, meaning in SR_MEASUREMENTS.items() if finding.get(key) is not None}


def mask_on_grid(finding, shape_zyx) -> np.ndarray:
    """A Finding's mask pasted into a (Z, Y, X) bool array."""
    labelmap = np.zeros(shape_zyx, np.uint8)
    finding.mask.paste_into(labelmap, 1)
    return labelmap.astype(bool)
