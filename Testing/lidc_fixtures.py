"""A small synthetic lidc_voi folder (table, images, masks), shared by the LIDC reader, grader and evaluation tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

COLUMNS = ["file", "split", "patient_id", "coordX", "coordY", "coordZ", "diameter_mm", "Diagnosis_value",
           "Malignancy_value", "Texture", "Calcification_value", "Spiculation_value"]


TEXTURE_TEXT = {0: "Non-Solid/GGO", 1: "Part Solid/Mixed", 2: "Solid"}


NODULE_HU = {0: -600.0, 1: -350.0, 2: 20.0}  # ground-glass, part-solid (mean of core and rim), solid


def make_lidc_folder(root: Path, n: int = 12, seed: int = 0, with_split: bool = True,
                     shape_zyx=(12, 28, 28), spacing_mm=(0.8, 0.8, 1.5)) -> Path:
    """A synthetic lidc_voi folder: spherical nodules in noisy lung, texture by HU, malignant = large.

    Nodule ``i`` has texture ``i % 3`` and diameter 5 or 11 mm (``(i // 3) % 2``; malignant when 11 mm); the
    first 2/3 of the rows are ``train``, the rest ``val``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        texture, large = i % 3, (i // 3) % 2
        diameter = 11.0 if large else 5.0
        origin = np.array([-50.0 + i, 20.0, -100.0 - 2 * i])
        zz, yy, xx = np.indices(shape_zyx).astype(float)
        centre_kji = (np.array(shape_zyx) - 1) / 2.0 + rng.uniform(-0.5, 0.5, 3)
        dist = np.sqrt(((zz - centre_kji[0]) * spacing_mm[2]) ** 2 + ((yy - centre_kji[1]) * spacing_mm[1]) ** 2
                       + ((xx - centre_kji[2]) * spacing_mm[0]) ** 2)
        mask = dist <= diameter / 2
        hu = rng.normal(-850.0, 30.0, shape_zyx)
        hu[mask] = NODULE_HU[texture] + rng.normal(0.0, 30.0, int(mask.sum()))
        if texture == 1:
            hu[dist <= diameter / 4] = 20.0
        name = f"SYN-{i:04d}_R_1.nii.gz"
        for folder, array in (("images", hu.astype(np.int16)), ("masks", mask.astype(np.uint8))):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(spacing_mm)
            image.SetOrigin(tuple(origin))
            sitk.WriteImage(image, str(root / folder / name))
        centre_lps = origin + centre_kji[::-1] * np.array(spacing_mm)
        row = [name, "train" if i < 2 * n // 3 else "val", f"SYN-{i:04d}", *centre_lps, diameter, large,
               4 if large else 2, TEXTURE_TEXT[texture], 6, 4 if large else 1]
        rows.append(row)
    columns = COLUMNS if with_split else [c for c in COLUMNS if c != "split"]
    with open(root / "nodules.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row if with_split else row[:1] + row[2:])
    return root
