"""``lunglesionai evaluate lidc-voi``: Dice, malignancy AUC (with a diameter-only baseline), texture and
invasiveness-surrogate F1 and calibration of the nodule grader on a folder in the ``lidc_voi`` layout.

Metrics (all plain numpy, no scikit-learn; the generic ones in :mod:`lunglesionai.evaluation.metrics.classification`):

* Dice per nodule in the VOI's ORIGINAL grid (the learned mask is resampled back from the isotropic crop), with
  mean, median and a percentile bootstrap 95 % CI of the mean; the classical segmentation
  (:func:`lunglesionai.stages.segmentation.segment_nodule`) is scored on the same nodules as a baseline.
* Malignancy ROC AUC by the Mann-Whitney U statistic (Hanley & McNeil, Radiology 143:29-36, 1982,
  doi:10.1148/radiology.143.1.7063747), overall and for nodules of 4-10 mm, beside a diameter-only logistic
  regression fit on the folder's ``train`` rows (never on the evaluated rows; when the folder has no train
  rows the baseline is absent) and a bootstrap 95 % CI of each AUC and of their difference.
* Texture and invasiveness macro-F1 (mean of the per-class F1 over the classes present in truth or
  prediction) and confusion matrices (rows = truth, columns = prediction).
* Expected calibration error of the malignancy probability: equal-width bins, weighted mean
  |accuracy - confidence| of the positive-class probability (Naeini et al., AAAI 2015; Guo et al., ICML 2017).
* LIDC attributes (graders with attribute heads): agreement with the radiologists' ratings beside trivial
  baselines, see :mod:`lunglesionai.evaluation.lidc_attribute_metrics`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import numpy as np

from lunglesionai.core.findings import to_jsonable
from lunglesionai.evaluation.lidc_attribute_metrics import attribute_metrics
from lunglesionai.evaluation.metrics.classification import (
    BOOTSTRAP_SAMPLES,
    bootstrap_ci,
    confusion_matrix,
    expected_calibration_error,
    fit_logistic,
    macro_f1,
    roc_auc,
)

__all__ = ["dice_score", "evaluate_lidc_voi"]
# roc_auc, confusion_matrix, macro_f1, expected_calibration_error, bootstrap_ci and fit_logistic live in
# lunglesionai.evaluation.metrics.classification (imported above, so older imports from here keep working).

logger = logging.getLogger(__name__)

SMALL_NODULE_RANGE_MM = (4.0, 10.0)
"""The diameter range (mm, inclusive) of the small-nodule AUC."""


def dice_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two boolean arrays of one shape (1.0 when both are empty).

    Raises:
        ValueError: shapes differ.
    """
    a = np.asarray(truth, dtype=bool)
    b = np.asarray(predicted, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"truth {a.shape} and predicted {b.shape} differ in shape")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate_lidc_voi(
    data_dir: str | os.PathLike,
    split: Optional[str] = "val",
    model_dir: str | os.PathLike | None = None,
    *,
    classical: bool = True,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Score the nodule grader (and the classical segmentation) on the VOIs of one split.

    Args:
        data_dir: folder in the ``lidc_voi`` layout (images/, masks/, nodules.csv).
        split: rows whose ``split`` equals this (all rows when the table has no ``split`` column, or None).
        model_dir: grader folder (default :func:`lunglesionai.stages.grading.default_model_dir`).
        classical: also score :func:`lunglesionai.stages.segmentation.segment_nodule` (radius = table diameter / 2).
        bootstrap_samples: resamples of the 95 % CIs.
        seed: bootstrap seed.

    Returns:
        JSON-ready dict: ``n``, ``dice_mean``, ``dice_median``, ``dice_ci95``, ``malignancy_auc``,
        ``texture_macro_f1``, ``invasiveness_macro_f1`` and more (baseline AUCs, 4-10 mm subset, confusion
        matrices, ECE, classical Dice, per-nodule rows) and ``attributes`` with flat summary keys
        (:func:`lunglesionai.evaluation.lidc_attribute_metrics.attribute_metrics`; None for a grader without
        attribute heads); a metric without labels is None.

    Raises:
        LidcTableError: the folder is not in the ``lidc_voi`` layout or has no rows for ``split``.
        GraderModelError: no usable grader in ``model_dir``.

    Example:
        >>> metrics = evaluate_lidc_voi("../shared/data/lidc_voi", "val")  # doctest: +SKIP
        >>> metrics["dice_mean"], metrics["malignancy_auc"]  # doctest: +SKIP
    """
    from lunglesionai.datasets.lidc import read_nodule_table
    from lunglesionai.stages.grading import NoduleGrader

    records = read_nodule_table(data_dir, split)
    grader = NoduleGrader.load(model_dir)
    segment = _classical_segmenter() if classical else None
    rows = []
    for n, record in enumerate(records):
        rows.append(_score_nodule(data_dir, record, grader, segment))
        if (n + 1) % 25 == 0 or n + 1 == len(records):
            logger.info("evaluated case %d/%d", n + 1, len(records))
    baseline = _diameter_baseline(data_dir, grader)
    metrics: dict[str, Any] = {
        "protocol": "lidc-voi",
        "data": str(data_dir),
        "split": split,
        "n": len(rows),
        "model": grader.model_info(),
        "calibration": grader.config.get("calibration"),
    }
    metrics.update(_dice_metrics(rows, bootstrap_samples, seed))
    metrics.update(_malignancy_metrics(rows, baseline, bootstrap_samples, seed))
    metrics.update(_class_metrics(rows))
    metrics.update(attribute_metrics(rows, _train_records(data_dir), bootstrap_samples, seed))
    metrics["grade_seconds_per_nodule"] = float(np.mean([r["grade_seconds"] for r in rows]))
    metrics["per_nodule"] = rows
    return to_jsonable(metrics, nan_as_none=True)


def _classical_segmenter():
    try:
        from lunglesionai.stages.segmentation import segment_nodule
    except ImportError as exc:
        logger.warning("classical segmentation not available (%s): no baseline Dice", exc)
        return None
    return segment_nodule


def _score_nodule(data_dir, record, grader, segment) -> dict[str, Any]:
    from lunglesionai.core.vocabulary import LIDC_RATED_ATTRIBUTES, TEXTURE_CLASSES
    from lunglesionai.datasets.lidc import load_voi

    volume, truth = load_voi(data_dir, record)
    center = volume.lps_to_kji([record.center_lps_mm])[0]
    center = np.clip(center, 0, np.asarray(volume.shape_zyx) - 1)
    start = time.perf_counter()
    result = grader.grade(volume, center, record.diameter_mm)
    row: dict[str, Any] = {
        "grade_seconds": time.perf_counter() - start,
        "file": record.file,
        "diameter_mm": record.diameter_mm,
        "dice": dice_score(truth, _paste(result.mask, truth.shape)),
        "malignant": record.malignant,
        "malignancy_probability": result.malignancy_probability,
        "rating": record.rating,
        "malignancy_rating": result.malignancy_rating,
        "texture": None if record.texture is None else TEXTURE_CLASSES[record.texture],
        "texture_predicted": result.texture,
        "invasiveness_predicted": max(result.invasiveness, key=result.invasiveness.get),
        "attribute_ratings": dict(zip(LIDC_RATED_ATTRIBUTES, record.attribute_ratings)),
        "calcification": record.calcification,
        "attributes_predicted": result.attributes,
        "attribute_levels_predicted": result.attribute_levels,
        "attribute_probabilities": result.attribute_probabilities,
        "calcified_probability": result.calcified_probability,
        "calcification_probabilities": result.calcification_probabilities,
    }
    if segment is not None:
        try:
            classical = segment(volume, tuple(center), record.diameter_mm / 2.0, None)
        except ValueError as exc:
            logger.warning("%s: classical segmentation refused (%s); Dice 0", record.file, exc)
            classical = None
        row["dice_classical"] = dice_score(truth, _paste(classical, truth.shape))
    return row


def _paste(mask, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, bool)
    if mask is not None:
        mask.paste_into(out, 1)
    return out


def _diameter_baseline(data_dir, grader) -> Optional[dict[str, Any]]:
    """Diameter-only logistic regression on log(diameter), fit on the folder's ``train`` rows.

    Falls back to the coefficients saved with the model (fit on its training split) when the folder has no
    labelled train rows. AUC does not depend on the coefficients (a monotone map of the diameter); the
    probabilities do (their ECE is reported).
    """
    from lunglesionai.datasets.lidc import LidcTableError, read_nodule_table

    try:
        train = [r for r in read_nodule_table(data_dir, None) if r.split == "train" and r.malignant is not None]
    except LidcTableError:
        train = []
    labels = np.array([r.malignant for r in train])
    if len(train) >= 2 and 0 < labels.sum() < len(labels):
        (a,), b = fit_logistic(np.log([r.diameter_mm for r in train]), labels)
        a = float(a)
        return {"a": a, "b": b, "feature": "log(diameter_mm)", "fit_on": f"train rows of this folder ({len(train)})"}
    saved = grader.config.get("diameter_baseline")
    if saved:
        return {**saved, "fit_on": "the model's training split (saved in its config.json)"}
    return None


def _dice_metrics(rows: list[dict], n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, prefix in (("dice", "dice"), ("dice_classical", "classical_dice")):
        if key not in rows[0]:
            continue
        values = np.array([r[key] for r in rows], float)
        out[f"{prefix}_mean"] = float(values.mean())
        out[f"{prefix}_median"] = float(np.median(values))
        out[f"{prefix}_ci95"] = bootstrap_ci(np.mean, (values,), n_boot, seed)
    if "dice_classical" in rows[0]:
        diff = np.array([r["dice"] - r["dice_classical"] for r in rows], float)
        out["dice_minus_classical_mean"] = float(diff.mean())
        out["dice_minus_classical_ci95"] = bootstrap_ci(np.mean, (diff,), n_boot, seed)
    return out


def _malignancy_metrics(rows: list[dict], baseline: Optional[dict], n_boot: int, seed: int) -> dict[str, Any]:
    labelled = [r for r in rows if r["malignant"] is not None]
    out: dict[str, Any] = {"n_malignancy_labelled": len(labelled), "diameter_baseline": baseline,
                           "malignancy_auc": None}
    if not labelled:
        return out
    y = np.array([r["malignant"] for r in labelled])
    p = np.array([r["malignancy_probability"] for r in labelled])
    d = np.array([r["diameter_mm"] for r in labelled])
    base = None if baseline is None else 1 / (1 + np.exp(-(baseline["a"] * np.log(d) + baseline["b"])))
    small = (d >= SMALL_NODULE_RANGE_MM[0]) & (d <= SMALL_NODULE_RANGE_MM[1])
    out["n_4_10mm"] = int(small.sum())
    for suffix, keep in (("", np.ones_like(small)), ("_4_10mm", small)):
        out[f"malignancy_auc{suffix}"] = roc_auc(p[keep], y[keep])
        out[f"malignancy_auc{suffix}_ci95"] = bootstrap_ci(roc_auc, (p[keep], y[keep]), n_boot, seed)
        if base is not None:
            out[f"diameter_baseline_auc{suffix}"] = roc_auc(base[keep], y[keep])
            out[f"malignancy_auc_minus_baseline{suffix}_ci95"] = bootstrap_ci(
                _auc_difference, (p[keep], base[keep], y[keep]), n_boot, seed
            )
            model_auc, base_auc = out[f"malignancy_auc{suffix}"], out[f"diameter_baseline_auc{suffix}"]
            out[f"malignancy_auc_minus_baseline{suffix}"] = (
                None if model_auc is None or base_auc is None else model_auc - base_auc
            )
    out["malignancy_ece"] = expected_calibration_error(p, y)
    out["diameter_baseline_ece"] = None if base is None else expected_calibration_error(base, y)
    rated = [r for r in rows if r["rating"] is not None]
    if rated:
        out["rating_mae"] = float(np.mean([abs(r["malignancy_rating"] - r["rating"]) for r in rated]))
    return out


def _auc_difference(p: np.ndarray, base: np.ndarray, y: np.ndarray) -> Optional[float]:
    a, b = roc_auc(p, y), roc_auc(base, y)
    return None if a is None or b is None else a - b


def _class_metrics(rows: list[dict]) -> dict[str, Any]:
    from lunglesionai.core.vocabulary import INVASIVENESS_CLASSES, TEXTURE_CLASSES

    labelled = [r for r in rows if r["texture"] is not None]
    out: dict[str, Any] = {"n_texture_labelled": len(labelled)}
    truth = np.array([TEXTURE_CLASSES.index(r["texture"]) for r in labelled], int)
    heads = (
        ("texture", "texture_predicted", TEXTURE_CLASSES),
        ("invasiveness", "invasiveness_predicted", INVASIVENESS_CLASSES),
    )
    for name, key, classes in heads:
        predicted = np.array([classes.index(r[key]) for r in labelled], int)
        matrix = confusion_matrix(truth, predicted, len(classes))
        out[f"{name}_macro_f1"] = macro_f1(matrix) if labelled else None
        out[f"{name}_confusion"] = {"classes": list(classes), "rows_truth_columns_predicted": matrix.tolist()}
        out[f"{name}_per_class_f1"] = {c: _class_f1(matrix, k) for k, c in enumerate(classes)}
    out["invasiveness_note"] = "radiological surrogate from CT texture (LIDC ratings), not pathology"
    return out


def _train_records(data_dir) -> list:
    """The folder's ``split == "train"`` rows (the baselines are fit on them; [] when there are none)."""
    from lunglesionai.datasets.lidc import LidcTableError, read_nodule_table

    try:
        return [r for r in read_nodule_table(data_dir, None) if r.split == "train"]
    except LidcTableError:
        return []


def _class_f1(matrix: np.ndarray, k: int) -> Optional[float]:
    support = matrix[k].sum() + matrix[:, k].sum()
    return None if support == 0 else float(2 * matrix[k, k] / support)


# ----------------------------------------------------------------------------------------------- CLI

SUMMARY_KEYS = (
    "n",
    "dice_mean",
    "dice_median",
    "classical_dice_mean",
    "malignancy_auc",
    "diameter_baseline_auc",
    "malignancy_auc_4_10mm",
    "diameter_baseline_auc_4_10mm",
    "malignancy_ece",
    "texture_macro_f1",
    "invasiveness_macro_f1",
    *(f"{a}_{m}" for a in ("spiculation", "lobulation", "margin", "sphericity")
      for m in ("within_one_accuracy", "majority_within_one_accuracy", "quadratic_kappa")),
    *(f"{c}_{m}" for c in ("spiculated", "lobulated", "poorly_defined_margin", "elongated", "calcified")
      for m in ("macro_f1", "majority_macro_f1", "diameter_macro_f1")),
)
