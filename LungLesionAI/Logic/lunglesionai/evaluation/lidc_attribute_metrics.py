"""Agreement of the grader's LIDC attribute heads with the radiologists' ratings, beside trivial baselines.

Used by ``lunglesionai evaluate lidc-voi`` (:func:`lunglesionai.evaluation.lidc_voi_protocol.evaluate_lidc_voi`).
Per 1-5 rating (spiculation, lobulation, margin, sphericity): the median predicted rating against the LIDC-IDRI
majority rating, as exact accuracy, accuracy within ±1 and Cohen's quadratic weighted kappa (with a bootstrap 95 %
CI); per binary cut (:data:`lunglesionai.stages.grading.ATTRIBUTE_CUTS` and "calcified" = a benign calcification
pattern: popcorn, laminated, solid, central) the macro-F1 of the call at probability 0.5 and the ROC AUC of the
probability; the 6-way calcification pattern as exact accuracy and macro-F1. Baselines, fit on the folder's
``train`` rows, never on the evaluated ones: the majority rating / majority cut label / majority pattern, and for
the cuts a diameter-only logistic regression on log(diameter_mm). The truth is radiologists' ratings (majority
votes of up to four readers; Armato et al., Med Phys 38(2):915-931, 2011, doi:10.1118/1.3528204), not pathology.
Plain numpy.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lunglesionai.evaluation.metrics.classification import (
    bootstrap_ci,
    confusion_matrix,
    fit_logistic,
    macro_f1,
    roc_auc,
)

__all__ = ["ATTRIBUTE_NOTE", "attribute_metrics", "binary_agreement", "ordinal_agreement", "weighted_kappa"]


def weighted_kappa(truth: np.ndarray, predicted: np.ndarray, n_classes: int, power: int = 2) -> Optional[float]:
    """Cohen's weighted kappa of two ordinal ratings 0..n_classes-1 (Cohen J, "Weighted kappa", Psychol Bull
    70(4):213-220, 1968, doi:10.1037/h0026256).

    kappa = 1 - Σ w_ij O_ij / Σ w_ij E_ij with disagreement weights w_ij = |i - j|^power / (n_classes - 1)^power
    (power 2: quadratic, 1: linear), O the observed joint proportions and E the product of the two marginals.
    A constant prediction scores 0.

    Args:
        truth, predicted: (N,) integer ratings in 0..n_classes-1.
        n_classes: number of ordered classes (>= 2).
        power: 1 (linear) or 2 (quadratic) weights.

    Returns:
        kappa in [-1, 1], or None when N = 0 or Σ w E = 0 (both raters constant on one class).

    Raises:
        ValueError: shapes differ, a rating is out of range, n_classes < 2 or power not 1 / 2.

    Example:
        >>> weighted_kappa(np.array([0, 1, 2]), np.array([0, 1, 2]), 3)
        1.0
    """
    if n_classes < 2 or power not in (1, 2):
        raise ValueError(f"need n_classes >= 2 and power 1 or 2, got {n_classes}, {power}")
    observed = confusion_matrix(truth, predicted, n_classes).astype(float)
    total = observed.sum()
    if total == 0:
        return None
    observed /= total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    levels = np.arange(n_classes)
    weights = (np.abs(levels[:, None] - levels[None, :]) / (n_classes - 1)) ** power
    chance = float((weights * expected).sum())
    return None if chance == 0 else float(1.0 - (weights * observed).sum() / chance)


def ordinal_agreement(truth: np.ndarray, predicted: np.ndarray, n_levels: int = 5) -> dict[str, Any]:
    """Agreement of predicted with true 1..n_levels ratings: exact accuracy, accuracy within ±1, quadratic kappa.

    Args:
        truth, predicted: (N,) integer ratings 1..n_levels.
        n_levels: the rating scale's top level (LIDC: 5).

    Returns:
        {"n", "exact_accuracy", "within_one_accuracy", "quadratic_kappa"} (None values when N = 0).

    Raises:
        ValueError: shapes differ or a rating is outside 1..n_levels.

    Example:
        >>> ordinal_agreement(np.array([1, 2, 5]), np.array([1, 3, 3]))["within_one_accuracy"]
        0.6666666666666666
    """
    t = np.asarray(truth).reshape(-1).astype(int)
    p = np.asarray(predicted).reshape(-1).astype(int)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and predicted {p.shape} differ in shape")
    if t.size and (min(t.min(), p.min()) < 1 or max(t.max(), p.max()) > n_levels):
        raise ValueError(f"ratings must be in 1..{n_levels}, got {sorted(set(t.tolist()) | set(p.tolist()))}")
    if t.size == 0:
        return {"n": 0, "exact_accuracy": None, "within_one_accuracy": None, "quadratic_kappa": None}
    return {
        "n": int(t.size),
        "exact_accuracy": float(np.mean(t == p)),
        "within_one_accuracy": float(np.mean(np.abs(t - p) <= 1)),
        "quadratic_kappa": weighted_kappa(t - 1, p - 1, n_levels, power=2),
    }


def binary_agreement(truth: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Agreement of a yes/no call (``probability >= threshold``) with 0/1 truth: macro-F1, accuracy, ROC AUC.

    Args:
        truth: (N,) 0/1 labels.
        probability: (N,) probabilities (or any score in [0, 1]; a constant gives AUC 0.5 when both classes occur).
        threshold: the call's cut.

    Returns:
        {"n", "n_positive", "macro_f1", "accuracy", "auc"} (macro-F1 over the classes present in truth or call;
        AUC None when one class is missing; all None when N = 0).

    Raises:
        ValueError: shapes differ or truth is not 0/1.

    Example:
        >>> binary_agreement(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))["macro_f1"]
        0.7333333333333334
    """
    y = np.asarray(truth).reshape(-1)
    p = np.asarray(probability, dtype=float).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"truth {y.shape} and probability {p.shape} differ in shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"truth must be 0/1, got {np.unique(y).tolist()}")
    if y.size == 0:
        return {"n": 0, "n_positive": 0, "macro_f1": None, "accuracy": None, "auc": None}
    called = (p >= threshold).astype(int)
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "macro_f1": macro_f1(confusion_matrix(y.astype(int), called, 2)),
        "accuracy": float(np.mean(called == y)),
        "auc": roc_auc(p, y.astype(int)),
    }


ATTRIBUTE_NOTE = ("LIDC-IDRI radiologists' majority ratings (nodules.csv *_value), not pathology; baselines fit on "
                  "the folder's train rows")


def attribute_metrics(rows: list[dict], train: list, n_boot: int, seed: int) -> dict[str, Any]:
    """The LIDC attribute metrics of ``evaluate lidc-voi``: ``{"attributes": nested metrics, flat summary keys}``.

    Args:
        rows: per-nodule rows of :func:`lunglesionai.evaluation.lidc_voi_protocol.evaluate_lidc_voi` (true
            ``attribute_ratings`` / ``calcification``, predicted ``attribute_levels_predicted``,
            ``attributes_predicted``, ``attribute_probabilities``, ``calcified_probability``,
            ``calcification_probabilities``, ``diameter_mm``).
        train: the folder's train :class:`lunglesionai.datasets.lidc.NoduleRecord` rows (baselines are fit on them;
            [] gives no baselines).
        n_boot, seed: bootstrap resamples and seed of the kappa CIs.

    Returns:
        ``{"attributes": {"note", "n_train", "ratings": {attribute: {"model", "majority_baseline", ...}},
        "cuts": {cut: {"definition", "model", "majority_baseline", "diameter_baseline"}},
        "calcification_pattern": {...}}, "<attribute>_quadratic_kappa": ..., "<cut>_macro_f1": ..., ...}``;
        ``{"attributes": None}`` when no row has attribute predictions (a grader without attribute heads).
    """
    from lunglesionai.core.vocabulary import LIDC_RATED_ATTRIBUTES

    graded = [r for r in rows if r["attribute_levels_predicted"] is not None]
    if not graded:
        return {"attributes": None}
    out: dict[str, Any] = {"note": ATTRIBUTE_NOTE, "n_train": len(train), "ratings": {}, "cuts": {}}
    for k, name in enumerate(LIDC_RATED_ATTRIBUTES):
        out["ratings"][name] = _rating_metrics(graded, train, name, k, n_boot, seed)
    for name, (truth_of, probability_of, definition, train_truth) in _cut_readers(LIDC_RATED_ATTRIBUTES).items():
        out["cuts"][name] = _cut_metrics(graded, train, truth_of, probability_of, train_truth, definition)
    out["calcification_pattern"] = _pattern_metrics(graded, train)
    flat: dict[str, Any] = {"attributes": out}
    for name, entry in out["ratings"].items():
        flat[f"{name}_within_one_accuracy"] = entry["model"]["within_one_accuracy"]
        flat[f"{name}_quadratic_kappa"] = entry["model"]["quadratic_kappa"]
        flat[f"{name}_majority_within_one_accuracy"] = (entry["majority_baseline"] or {}).get("within_one_accuracy")
    for name, entry in out["cuts"].items():
        flat[f"{name}_macro_f1"] = entry["model"]["macro_f1"]
        flat[f"{name}_majority_macro_f1"] = (entry["majority_baseline"] or {}).get("macro_f1")
        flat[f"{name}_diameter_macro_f1"] = (entry["diameter_baseline"] or {}).get("macro_f1")
    return flat


def _rating_metrics(graded: list[dict], train: list, name: str, k: int, n_boot: int, seed: int) -> dict[str, Any]:
    rated = [r for r in graded if r["attribute_ratings"][name] is not None]
    truth = np.array([r["attribute_ratings"][name] for r in rated], int)
    predicted = np.array([r["attribute_levels_predicted"][name] for r in rated], int)
    train_ratings = [r.attribute_ratings[k] for r in train if r.attribute_ratings[k] is not None]
    majority = int(np.bincount(train_ratings).argmax()) if train_ratings else None
    model = ordinal_agreement(truth, predicted)
    model["quadratic_kappa_ci95"] = bootstrap_ci(
        lambda t, p: weighted_kappa(t - 1, p - 1, 5), (truth, predicted), n_boot, seed) if len(truth) else None
    expected = np.array([r["attributes_predicted"][name] for r in rated], float)
    model["mean_abs_error_expected_rating"] = float(np.abs(expected - truth).mean()) if len(truth) else None
    return {
        "model": model,
        "model_rating": "median of the predicted distribution (1 + #{k: P(rating > k) >= 0.5})",
        "train_majority_rating": majority,
        "majority_baseline": (ordinal_agreement(truth, np.full_like(truth, majority)) if majority is not None
                              else None),
        "truth_counts": {str(v): int((truth == v).sum()) for v in range(1, 6)},
    }


def _cut_readers(attributes) -> dict[str, tuple]:
    """{cut name: (truth of a row or None, probability of a row, definition, truth of a train record or None)}."""
    from lunglesionai.core.vocabulary import LIDC_BENIGN_CALCIFICATION_PATTERNS, LIDC_CALCIFICATION_PATTERNS
    from lunglesionai.stages.grading import ATTRIBUTE_CUTS

    def holds(cut, rating):
        return None if rating is None else int(cut.holds(rating))

    readers = {}
    for name, cut in ATTRIBUTE_CUTS.items():
        readers[name] = (
            lambda row, c=cut: holds(c, row["attribute_ratings"][c.attribute]),
            lambda row, n=name: row["attribute_probabilities"][n],
            f"{cut.attribute} {'>=' if cut.at_least else '<='} {cut.level}",
            lambda record, c=cut, k=attributes.index(cut.attribute): holds(c, record.attribute_ratings[k]),
        )
    benign = {LIDC_CALCIFICATION_PATTERNS.index(p) + 1 for p in LIDC_BENIGN_CALCIFICATION_PATTERNS}
    readers["calcified"] = (
        lambda row: None if row["calcification"] is None else int(row["calcification"] in benign),
        lambda row: row["calcified_probability"],
        f"calcification rating in {sorted(benign)} ({', '.join(LIDC_BENIGN_CALCIFICATION_PATTERNS)})",
        lambda record: None if record.calcification is None else int(record.calcification in benign),
    )
    return readers


def _cut_metrics(graded, train, truth_of, probability_of, train_truth, definition) -> dict[str, Any]:
    """Model, train-majority and diameter-only logistic agreement with one binary cut."""
    known = [r for r in graded if truth_of(r) is not None]
    y = np.array([truth_of(r) for r in known], int)
    p = np.array([probability_of(r) for r in known], float)
    d = np.array([r["diameter_mm"] for r in known], float)
    labelled = [(rec.diameter_mm, train_truth(rec)) for rec in train if train_truth(rec) is not None]
    train_y = np.array([t for _, t in labelled], int)
    majority = int(train_y.mean() >= 0.5) if len(train_y) else None
    out: dict[str, Any] = {
        "definition": definition,
        "model": binary_agreement(y, p),
        "train_positive_fraction": float(train_y.mean()) if len(train_y) else None,
        "majority_baseline": binary_agreement(y, np.full(len(y), float(majority))) if majority is not None else None,
        "diameter_baseline": None,
    }
    if len(train_y) >= 2 and 0 < train_y.sum() < len(train_y):
        (a,), b = fit_logistic(np.log([dm for dm, _ in labelled]), train_y)
        base = 1.0 / (1.0 + np.exp(-(float(a) * np.log(d) + b)))
        out["diameter_baseline"] = {**binary_agreement(y, base), "a": float(a), "b": b, "feature": "log(diameter_mm)"}
    if out["majority_baseline"] is not None:
        out["majority_baseline"]["auc"] = None  # a constant score ranks nothing
    return out


def _pattern_metrics(graded: list[dict], train: list) -> dict[str, Any]:
    """6-way calcification pattern: exact accuracy and macro-F1 of the most probable pattern, train-majority beside."""
    from lunglesionai.core.vocabulary import LIDC_CALCIFICATION_PATTERNS

    known = [r for r in graded if r["calcification"] is not None]
    truth = np.array([r["calcification"] - 1 for r in known], int)
    predicted = np.array([int(np.argmax([r["calcification_probabilities"][c] for c in LIDC_CALCIFICATION_PATTERNS]))
                          for r in known], int)
    train_values = [r.calcification - 1 for r in train if r.calcification is not None]
    majority = int(np.bincount(train_values).argmax()) if train_values else None
    n = len(LIDC_CALCIFICATION_PATTERNS)

    def scores(pred):
        matrix = confusion_matrix(truth, pred, n)
        return {"exact_accuracy": float(np.mean(pred == truth)) if len(truth) else None, "macro_f1": macro_f1(matrix),
                "rows_truth_columns_predicted": matrix.tolist()}

    return {
        "classes": list(LIDC_CALCIFICATION_PATTERNS),
        "model": scores(predicted),
        "majority_baseline": None if majority is None else scores(np.full_like(truth, majority)),
        "truth_counts": {c: int((truth == k).sum()) for k, c in enumerate(LIDC_CALCIFICATION_PATTERNS)},
    }
