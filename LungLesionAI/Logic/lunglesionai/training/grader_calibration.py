"""Fitting the grader's calibration on the training data: the malignancy stacker (logistic regression on the
network's outputs and the diameter, chosen by cross-validation) and the temperature of the malignancy logit.

Inference applies what these fit (:func:`lunglesionai.stages.grading.stacked_logit`, the saved temperature); the
fitting itself lives here, with the trainer, so that inference never imports training or evaluation code.
Temperature scaling: Guo C et al., "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from lunglesionai.evaluation.lidc_voi_protocol import expected_calibration_error, fit_logistic, roc_auc
from lunglesionai.stages.grading import _sigmoid

__all__ = ["calibrate_temperature", "fit_malignancy_stacker", "fit_temperature"]

logger = logging.getLogger(__name__)

STACKER_CANDIDATES = (("log_diameter", "logit"), ("log_diameter", "rating"), ("log_diameter", "logit", "rating"))
"""Feature sets the malignancy stacker chooses from (by cross-validation on the training split)."""
STACKER_FOLDS = 5
STACKER_L2 = 1e-2
"""L2 penalty of the stacker's logistic regression (standardised features)."""
TEMPERATURE_GRID = np.exp(np.linspace(math.log(0.2), math.log(5.0), 401))
"""Temperatures searched by :func:`fit_temperature`."""


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the binary negative log-likelihood of sigmoid(logit / T) (grid search).

    Args:
        logits: (N,) malignancy logits.
        labels: (N,) 0/1.

    Returns:
        T in [0.2, 5] (1 keeps the probabilities).

    Raises:
        ValueError: shapes differ or the input is empty.
    """
    z = np.asarray(logits, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"need equal non-empty shapes, got {z.shape} and {y.shape}")
    scaled = z[None, :] / TEMPERATURE_GRID[:, None]
    nll = np.mean(np.logaddexp(0.0, scaled) - y[None, :] * scaled, axis=1)
    return float(TEMPERATURE_GRID[int(np.argmin(nll))])


def fit_malignancy_stacker(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    candidates: tuple[tuple[str, ...], ...] = STACKER_CANDIDATES,
    n_folds: int = STACKER_FOLDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Logistic regression over standardised features, the feature set chosen by k-fold CV (pooled AUC).

    Meant for the training split (never val): each candidate is scored by the AUC of its out-of-fold
    predictions; the best is refit on all rows.

    Args:
        features: name -> (N,) values (e.g. from :func:`lunglesionai.stages.grading.stacking_features`).
        labels: (N,) 0/1.
        candidates: feature-name tuples to compare.
        n_folds: folds of the cross-validation.
        seed: fold assignment seed.

    Returns:
        {"features", "mean", "std", "weights", "bias", "cv_auc": {"a+b": auc}, "fit_on": "train"}, JSON-ready.

    Raises:
        ValueError: a class is missing, or fewer rows than folds.
    """
    labels = np.asarray(labels)
    if len(labels) < n_folds or len(np.unique(labels)) != 2:
        raise ValueError(f"stacker needs >= {n_folds} rows and both classes, got {len(labels)} rows")
    folds = np.random.default_rng(seed).permutation(len(labels)) % n_folds
    cv_auc = {}
    for names in candidates:
        x = np.column_stack([features[n] for n in names])
        out_of_fold = np.zeros(len(labels))
        for k in range(n_folds):
            held = folds == k
            mean, std = x[~held].mean(0), x[~held].std(0) + 1e-9
            w, b = fit_logistic((x[~held] - mean) / std, labels[~held], l2=STACKER_L2)
            out_of_fold[held] = (x[held] - mean) / std @ w + b
        cv_auc["+".join(names)] = roc_auc(out_of_fold, labels)
    best = max(candidates, key=lambda names: cv_auc["+".join(names)])
    x = np.column_stack([features[n] for n in best])
    mean, std = x.mean(0), x.std(0) + 1e-9
    w, b = fit_logistic((x - mean) / std, labels, l2=STACKER_L2)
    logger.info("malignancy stacker %s (train CV AUC %s)", "+".join(best), cv_auc)
    return {"features": list(best), "mean": mean.tolist(), "std": std.tolist(), "weights": w.tolist(),
            "bias": b, "cv_auc": cv_auc, "fit_on": "train"}


def calibrate_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Temperature scaling of malignancy logits fit on these rows (val), kept only when it lowers their ECE.

    Args:
        logits: (N,) malignancy logits.
        labels: (N,) 0/1, -1 = unknown (ignored).

    Returns:
        {"temperature" (1.0 when not kept), "val_ece_before", "val_ece_after", "temperature_fitted_on": "val"};
        the ECEs are None when the rows lack a class.
    """
    known = labels >= 0
    calibration = {"temperature": 1.0, "val_ece_before": None, "val_ece_after": None, "temperature_fitted_on": "val"}
    if len(np.unique(labels[known])) == 2:
        logits, labels = logits[known], labels[known]
        fitted = fit_temperature(logits, labels)
        before = expected_calibration_error(_sigmoid(logits), labels)
        after = expected_calibration_error(_sigmoid(logits / fitted), labels)
        calibration.update(val_ece_before=before, val_ece_after=after, temperature=fitted if after < before else 1.0)
        logger.info("val ECE %.4f -> %.4f with T=%.3f (%s)", before, after, fitted,
                    "kept" if after < before else "not kept")
    return calibration
