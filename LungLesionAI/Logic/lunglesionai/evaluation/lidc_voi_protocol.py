"""``lunglesionai evaluate lidc-voi``: Dice, malignancy AUC (with a diameter-only baseline), texture and
invasiveness-surrogate F1 and calibration of the nodule grader on a folder in the ``lidc_voi`` layout.

Metrics (all plain numpy, no scikit-learn):

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
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import numpy as np

from lunglesionai.core.findings import to_jsonable

__all__ = [
    "roc_auc",
    "confusion_matrix",
    "macro_f1",
    "expected_calibration_error",
    "dice_score",
    "bootstrap_ci",
    "fit_logistic",
    "evaluate_lidc_voi",
]

logger = logging.getLogger(__name__)

ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error."""
BOOTSTRAP_SAMPLES = 2000
"""Bootstrap resamples for the 95 % confidence intervals."""
SMALL_NODULE_RANGE_MM = (4.0, 10.0)
"""The diameter range (mm, inclusive) of the small-nodule AUC."""


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Area under the ROC curve by the Mann-Whitney statistic (ties count one half).

    Args:
        scores: (N,) real scores, higher = more likely positive.
        labels: (N,) 0/1 truth.

    Returns:
        AUC in [0, 1], or None when only one class is present.

    Raises:
        ValueError: shapes differ or labels are not 0/1.

    Example:
        >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(labels).tolist()}")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, float)
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, scores.size + 1)
    unique, inverse, counts = np.unique(sorted_scores, return_inverse=True, return_counts=True)
    if unique.size < scores.size:  # average ranks of ties
        mean_rank = np.bincount(inverse, weights=np.arange(1, scores.size + 1)) / counts
        ranks[order] = mean_rank[inverse]
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows = truth, columns = prediction.

    Raises:
        ValueError: shapes differ or a label is outside 0..n_classes-1.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    truth = np.asarray(truth).reshape(-1)
    predicted = np.asarray(predicted).reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {truth.shape} and predicted {predicted.shape} differ in shape")
    for name, values in (("truth", truth), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} labels must be in 0..{n_classes - 1}, got {np.unique(values).tolist()}")
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (truth.astype(int), predicted.astype(int)), 1)
    return matrix


def macro_f1(matrix: np.ndarray) -> Optional[float]:
    """Macro-averaged F1 of a confusion matrix, over the classes present in truth or prediction.

    Args:
        matrix: (C, C) counts, rows = truth.

    Returns:
        The mean per-class F1, or None for an empty matrix.

    Example:
        >>> macro_f1(np.array([[1, 0], [1, 1]]))  # F1 2/3 and 2/3
        0.6666666666666666
    """
    matrix = np.asarray(matrix, dtype=float)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1) + matrix.sum(axis=0)
    present = support > 0
    if not present.any():
        return None
    return float(np.mean(2 * tp[present] / support[present]))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of binary probabilities (equal-width bins over [0, 1]).

    ECE = sum over bins of (bin count / N) × |mean label − mean probability| in the bin.

    Raises:
        ValueError: shapes differ, empty input, probabilities outside [0, 1] or n_bins < 1.

    Example:
        >>> round(expected_calibration_error(np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 1, 1, 1])), 6)
        0.25
    """
    p = np.asarray(probabilities, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {p.shape} and {y.shape}")
    if n_bins < 1 or p.min() < 0 or p.max() > 1:
        raise ValueError(f"probabilities must be in [0, 1] and n_bins >= 1 (n_bins={n_bins})")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(ece)


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


def bootstrap_ci(
    statistic, arrays: tuple[np.ndarray, ...], n_samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Optional[tuple[float, float]]:
    """Percentile bootstrap 95 % CI of ``statistic(*arrays)``, resampling the N rows with replacement.

    Args:
        statistic: function of the resampled arrays returning a float or None (a None resample is skipped).
        arrays: arrays with the same first dimension N.
        n_samples: resamples.
        seed: random seed (results are reproducible).

    Returns:
        (2.5th, 97.5th) percentile, or None when N = 0 or no resample gave a value.
    """
    n = len(arrays[0])
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_samples):
        idx = rng.integers(0, n, n)
        value = statistic(*(np.asarray(a)[idx] for a in arrays))
        if value is not None:
            values.append(value)
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, l2: float = 1e-4, n_iter: int = 100
) -> tuple[np.ndarray, float]:
    """Fit p = sigmoid(features @ w + b) by Newton's method, with an L2 penalty ``l2 · N · |w|² / 2`` (not on b).

    Args:
        features: (N,) or (N, F) real features.
        labels: (N,) 0/1, both classes present.
        l2: penalty strength per sample (keeps separable data finite).
        n_iter: most Newton steps.

    Returns:
        (w of shape (F,), b).

    Raises:
        ValueError: lengths differ or a class is missing.

    Example:
        >>> w, b = fit_logistic(np.array([0.0, 1, 2, 3]), np.array([0, 1, 0, 1]))
        >>> bool(w[0] > 0)
        True
    """
    x = np.asarray(features, dtype=float)
    x = x.reshape(len(x), -1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if len(x) != len(y) or y.min(initial=1) == y.max(initial=0):
        raise ValueError(f"need equal lengths and both classes, got {x.shape}, {y.shape}, classes {np.unique(y)}")
    design = np.column_stack([x, np.ones(len(x))])
    n_params = design.shape[1]
    penalty = np.diag([l2 * len(x)] * (n_params - 1) + [0.0])
    w = np.zeros(n_params)
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(n_params)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1].copy(), float(w[-1])


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
        matrices, ECE, classical Dice, per-nodule rows); a metric without labels is None.

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
    from lunglesionai.core.vocabulary import TEXTURE_CLASSES
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
)
