"""Binary and multi-class scores of the grader's evaluation: ROC AUC, confusion matrix, macro-F1, expected
calibration error, percentile bootstrap CIs and a small logistic regression (plain numpy, no scikit-learn).

ROC AUC by the Mann-Whitney U statistic (Hanley & McNeil, Radiology 143:29-36, 1982,
doi:10.1148/radiology.143.1.7063747); expected calibration error with equal-width bins (Naeini et al., AAAI 2015;
Guo et al., ICML 2017).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "ECE_BINS",
    "bootstrap_ci",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_logistic",
    "macro_f1",
    "roc_auc",
]

ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error."""
BOOTSTRAP_SAMPLES = 2000
"""Bootstrap resamples for the 95 % confidence intervals."""


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
