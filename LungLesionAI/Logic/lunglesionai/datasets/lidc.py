"""LIDC-IDRI nodule VOIs: the ``lidc_voi`` table, its labels, nodule-centred isotropic crops and augmentation.

Folder layout (as ``../shared/data/lidc_voi``)::

    DIR/nodules.csv        one row per nodule (columns below)
    DIR/images/<file>      int16 HU crop around the nodule at the scan's own spacing, LPS geometry
    DIR/masks/<file>       its consensus mask (0/1) on the same grid

Columns read from ``nodules.csv``: ``file``, ``coordX``, ``coordY``, ``coordZ`` (nodule centre, LPS mm) and
``diameter_mm`` are required; ``split``, ``patient_id``, ``Diagnosis_value``, ``Malignancy_value``, ``Texture``
(or ``Texture_value``) are optional (missing labels are ``None``; a table without ``split`` is one split).

Label mapping (LIDC-IDRI majority votes; Armato et al., Med Phys 38(2):915-931, 2011, doi:10.1118/1.3528204):

* malignancy (binary): ``Diagnosis_value`` (1 = malignant);
* malignancy rating: ``Malignancy_value`` 1-5;
* texture, 3 classes, from the five LIDC texture ratings (1 Non-Solid/GGO, 2 Non-Solid/Mixed,
  3 Part Solid/Mixed, 4 Solid/Mixed, 5 Solid): ratings 1-2 are ground-glass (non-solid, mostly GGO),
  3-4 are part-solid (mixed attenuation), 5 is solid. In the shared set this gives 66 / 66 / 586 nodules,
  the counts the project's issue names;
* semantic attributes (auxiliary training targets, :data:`ATTRIBUTES`): calcified (``Calcification_value``
  1-5 = a calcification pattern -> +1, 6 = absent -> -1) and the 1-5 ratings ``Lobulation_value``,
  ``Margin_value``, ``Sphericity_value``, ``Spiculation_value``, ``Subtlety_value`` scaled as (v - 3) / 2;
* LIDC attribute ratings (targets of the grader's attribute heads): ``Spiculation_value``,
  ``Lobulation_value``, ``Margin_value``, ``Sphericity_value`` kept as the 1-5 ratings
  (:attr:`NoduleRecord.attribute_ratings`, order of :data:`LIDC_RATED_ATTRIBUTES`) and ``Calcification_value``
  1-6 (popcorn, laminated, solid, non-central, central, absent; :attr:`NoduleRecord.calcification`);
* invasiveness surrogate: ground-glass -> pre-invasive (AAH/AIS), part-solid -> minimally-invasive (MIA),
  solid -> invasive (IAC). This is a radiological surrogate from CT texture, NOT pathology: LIDC-IDRI has no
  histology for these nodules.

Crops: the VOI is resampled (SimpleITK, linear) onto an isotropic grid centred on the nodule, axes along the
volume's own axes, voxels outside the VOI padded with ``PAD_HU`` (air, -1000 HU); intensities are then windowed
to [0, 1] (``HU_WINDOW``); the consensus mask is resampled the same way to a soft [0, 1] mask.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.hu_windows import NODULE_WINDOW_HU
from lunglesionai.core.sitk_bridge import volume_from_sitk
from lunglesionai.core.vocabulary import LIDC_RATED_ATTRIBUTES
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.tables import finite_number

__all__ = [
    "ATTRIBUTES",
    "CALCIFICATION_ABSENT",
    "RATED_ATTRIBUTE_COLUMNS",
    "HU_WINDOW",
    "LIDC_TEXTURE_RATING",
    "LIDC_TEXTURE_TEXT",
    "LidcTableError",
    "NoduleRecord",
    "REQUIRED_COLUMNS",
    "TABLE_NAME",
    "load_voi",
    "read_nodule_table",
    "texture_class",
]

logger = logging.getLogger(__name__)
HU_WINDOW = NODULE_WINDOW_HU
"""The grader's input window (:data:`lunglesionai.core.hu_windows.NODULE_WINDOW_HU`)."""
LIDC_TEXTURE_TEXT = {
    "non-solid/ggo": 0,
    "non-solid/mixed": 0,
    "part solid/mixed": 1,
    "solid/mixed": 1,
    "solid": 2,
}
"""LIDC ``Texture`` text -> index in :data:`TEXTURE_CLASSES`."""
LIDC_TEXTURE_RATING = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2}
"""LIDC ``Texture_value`` rating 1-5 -> index in :data:`TEXTURE_CLASSES`."""
ATTRIBUTES = ("calcified", "lobulation", "margin", "sphericity", "spiculation", "subtlety")
"""LIDC semantic ratings regressed by the auxiliary head, each scaled to [-1, 1]."""
_ATTRIBUTE_COLUMNS = ("Calcification_value", "Lobulation_value", "Margin_value", "Sphericity_value",
                      "Spiculation_value", "Subtlety_value")
RATED_ATTRIBUTE_COLUMNS = {"spiculation": "Spiculation_value", "lobulation": "Lobulation_value",
                           "margin": "Margin_value", "sphericity": "Sphericity_value"}
"""``nodules.csv`` column of each of :data:`LIDC_RATED_ATTRIBUTES` (majority-vote 1-5 ratings)."""
CALCIFICATION_ABSENT = 6
"""LIDC ``Calcification_value`` meaning "absent" (1-5 are calcification patterns)."""
REQUIRED_COLUMNS = ("file", "coordX", "coordY", "coordZ", "diameter_mm")
TABLE_NAME = "nodules.csv"


class LidcTableError(ValueError):
    """A ``nodules.csv`` (or a VOI it names) that cannot be used; the message names the file, row and column."""


@dataclass(frozen=True)
class NoduleRecord:
    """One row of ``nodules.csv``.

    Args:
        file: file name under ``images/`` and ``masks/``.
        center_lps_mm: nodule centre (x, y, z), LPS mm.
        diameter_mm: the table's nodule diameter (mm).
        split: "train", "val", ... ("" when the table has no split column).
        patient_id: LIDC patient ("" when absent).
        malignant: ``Diagnosis_value`` 0/1, or None.
        rating: ``Malignancy_value`` 1-5, or None.
        texture: index into :data:`TEXTURE_CLASSES`, or None.
        attributes: the :data:`ATTRIBUTES` scaled to [-1, 1], NaN where the table has none.
        attribute_ratings: the 1-5 ratings of :data:`LIDC_RATED_ATTRIBUTES` (spiculation, lobulation, margin,
            sphericity) in that order, None where the table has none.
        calcification: LIDC ``Calcification_value`` 1-6 (6 = absent), or None.
    """

    file: str
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    split: str = ""
    patient_id: str = ""
    malignant: Optional[int] = None
    rating: Optional[int] = None
    texture: Optional[int] = None
    attributes: tuple[float, ...] = (math.nan,) * len(ATTRIBUTES)
    attribute_ratings: tuple[Optional[int], ...] = (None,) * len(LIDC_RATED_ATTRIBUTES)
    calcification: Optional[int] = None

    @property
    def invasiveness(self) -> Optional[int]:
        """Index into :data:`INVASIVENESS_CLASSES` (the texture surrogate), or None."""
        return self.texture


def read_nodule_table(data_dir: str | os.PathLike, split: Optional[str] = None) -> list[NoduleRecord]:
    """Read and validate ``DIR/nodules.csv``.

    Args:
        data_dir: folder in the ``lidc_voi`` layout.
        split: keep rows whose ``split`` equals this; ignored (all rows kept, logged) when the table has no
            ``split`` column; None keeps all rows.

    Returns:
        The records in table order.

    Raises:
        LidcTableError: no table, a required column missing, a value that is not a number / not a known label
            (message: file, row number, column, value), or no rows left for ``split``.

    Example:
        >>> records = read_nodule_table("../shared/data/lidc_voi", split="val")  # doctest: +SKIP
    """
    path = Path(data_dir) / TABLE_NAME
    if not path.is_file():
        raise LidcTableError(f"{path}: no such table (expected the lidc_voi layout: images/, masks/, {TABLE_NAME})")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise LidcTableError(f"{path}: missing column(s) {missing}; found {columns}")
        records = [_parse_row(path, row_number, row) for row_number, row in enumerate(reader, start=2)]
    if split is not None and "split" in columns:
        records = [r for r in records if r.split == split]
    elif split is not None:
        logger.info("%s has no 'split' column: using all %d rows as split %r", path, len(records), split)
    if not records:
        raise LidcTableError(f"{path}: no rows" + (f" with split == {split!r}" if split is not None else ""))
    return records


def _parse_row(path: Path, row_number: int, row: dict[str, str]) -> NoduleRecord:
    def number(column: str) -> float:
        return finite_number(path, row_number, column, row.get(column), LidcTableError)

    def optional_int(column: str, allowed: range) -> Optional[int]:
        if not (row.get(column) or "").strip():
            return None
        value = number(column)
        if value != int(value) or int(value) not in allowed:
            raise LidcTableError(
                f"{path}: row {row_number}, column {column}: {row[column]!r} not an integer in "
                f"{allowed.start}..{allowed.stop - 1}"
            )
        return int(value)

    file = (row.get("file") or "").strip()
    if not file:
        raise LidcTableError(f"{path}: row {row_number}, column file: empty")
    diameter = number("diameter_mm")
    if diameter <= 0:
        raise LidcTableError(f"{path}: row {row_number}, column diameter_mm: must be > 0, got {diameter}")
    texture = None
    if (row.get("Texture") or "").strip():
        texture = _texture_from_text(path, row_number, row["Texture"])
    elif (row.get("Texture_value") or "").strip():
        texture = LIDC_TEXTURE_RATING[optional_int("Texture_value", range(1, 6))]
    return NoduleRecord(
        file=file,
        center_lps_mm=(number("coordX"), number("coordY"), number("coordZ")),
        diameter_mm=diameter,
        split=(row.get("split") or "").strip(),
        patient_id=(row.get("patient_id") or "").strip(),
        malignant=optional_int("Diagnosis_value", range(0, 2)),
        rating=optional_int("Malignancy_value", range(1, 6)),
        texture=texture,
        attributes=tuple(_attribute(column, optional_int(column, range(1, 7))) for column in _ATTRIBUTE_COLUMNS),
        attribute_ratings=tuple(optional_int(RATED_ATTRIBUTE_COLUMNS[name], range(1, 6))
                                for name in LIDC_RATED_ATTRIBUTES),
        calcification=optional_int("Calcification_value", range(1, 7)),
    )


def _attribute(column: str, value: Optional[int]) -> float:
    if value is None:
        return math.nan
    if column == "Calcification_value":
        return -1.0 if value == CALCIFICATION_ABSENT else 1.0
    return (min(value, 5) - 3) / 2.0


def _texture_from_text(path: Path, row_number: int, text: str) -> int:
    try:
        return texture_class(text)
    except ValueError as exc:
        raise LidcTableError(f"{path}: row {row_number}, column Texture: {exc}") from None


def texture_class(lidc_texture: str) -> int:
    """Index in :data:`TEXTURE_CLASSES` of an LIDC ``Texture`` text (case and spaces ignored).

    Raises:
        ValueError: not one of the five LIDC texture texts.

    Example:
        >>> TEXTURE_CLASSES[texture_class("Part Solid/Mixed")]
        'part-solid'
    """
    key = " ".join(str(lidc_texture).split()).lower()
    if key not in LIDC_TEXTURE_TEXT:
        raise ValueError(f"unknown LIDC texture {lidc_texture!r}; expected one of {sorted(LIDC_TEXTURE_TEXT)}")
    return LIDC_TEXTURE_TEXT[key]


def load_voi(
    data_dir: str | os.PathLike, record: NoduleRecord, with_mask: bool = True
) -> tuple[Volume, Optional[np.ndarray]]:
    """Read one VOI and (optionally) its mask.

    Args:
        data_dir: the ``lidc_voi`` folder.
        record: the nodule's table row.
        with_mask: also read ``masks/<file>``.

    Returns:
        (volume in HU, boolean (Z, Y, X) mask on the same grid, or None when ``with_mask`` is False).

    Raises:
        LidcTableError: a file is missing or unreadable, or the mask's grid differs from the image's.
    """
    image_path = Path(data_dir) / "images" / record.file
    volume = volume_from_sitk(_read_image(image_path), str(image_path))
    if not with_mask:
        return volume, None
    mask_path = Path(data_dir) / "masks" / record.file
    mask_image = _read_image(mask_path)
    mask = sitk.GetArrayFromImage(mask_image) > 0
    if mask.shape != volume.shape_zyx or not np.allclose(mask_image.GetSpacing(), volume.spacing_mm, atol=1e-4):
        raise LidcTableError(
            f"{mask_path}: mask grid (shape {mask.shape}, spacing {mask_image.GetSpacing()}) differs from the "
            f"image's (shape {volume.shape_zyx}, spacing {volume.spacing_mm})"
        )
    return volume, mask


def _read_image(path: Path) -> sitk.Image:
    if not path.is_file():
        raise LidcTableError(f"{path}: no such file (named in {TABLE_NAME})")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise LidcTableError(f"{path}: unreadable image ({str(exc).strip().splitlines()[-1]})") from exc
