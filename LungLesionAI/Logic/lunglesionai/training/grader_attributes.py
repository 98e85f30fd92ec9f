"""The LIDC attribute heads' part of grader training: targets, losses, model-selection metrics, saved config.

Targets: the LIDC-IDRI radiologists' majority ratings of ``nodules.csv`` (spiculation, lobulation, margin,
sphericity 1-5; calcification 1-6), read by :mod:`lunglesionai.datasets.lidc`; radiologists' ratings, not
pathology. The ordinal heads are trained by binary cross-entropy on each cut "rating > k" (the cumulative-logit
likelihood; McCullagh, J R Stat Soc B 42(2):109-142, 1980), the calcification head by cross-entropy over the six
patterns; both unweighted so that their probabilities stay calibrated for the rules that read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from lunglesionai.core.vocabulary import LIDC_CALCIFICATION_PATTERNS, LIDC_RATED_ATTRIBUTES
from lunglesionai.datasets.lidc import NoduleRecord
from lunglesionai.evaluation.lidc_attribute_metrics import ordinal_agreement
from lunglesionai.evaluation.metrics.classification import confusion_matrix, macro_f1
from lunglesionai.nets.densesharp import RATING_LEVELS, DenseSharpNet, DenseSharpOutput
from lunglesionai.stages.grading import NoduleGrader

__all__ = ["AttributeLabels", "attribute_config", "attribute_head_losses", "attribute_val_metrics"]


def attribute_head_losses(out: DenseSharpOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss terms of the LIDC attribute heads ({} for a net without them or a batch without their labels).

    Args:
        out: network outputs; uses ``attribute_cut_logits`` (B, 4, 4) and ``calcification_logits`` (B, 6).
        batch: "attribute_ratings" (B, 4) int64 1-5 ratings, 0 = none; "calcification" (B,) int64 0-5, -1 = none.

    Returns:
        {"ordinal_attributes": mean binary cross-entropy over every known cut "rating > k" (the cumulative-logit
        likelihood, McCullagh 1980), "calcification": cross-entropy over the known patterns}, unweighted so the
        probabilities stay calibrated.
    """
    terms: dict[str, torch.Tensor] = {}
    ratings = batch.get("attribute_ratings")
    if out.attribute_cut_logits is not None and ratings is not None and (ratings > 0).any():
        levels = torch.arange(1, RATING_LEVELS, device=ratings.device)
        targets = (ratings[:, :, None] > levels).float()
        known = (ratings > 0)[:, :, None].expand_as(targets)
        terms["ordinal_attributes"] = nn.functional.binary_cross_entropy_with_logits(
            out.attribute_cut_logits[known], targets[known])
    calcification = batch.get("calcification")
    if out.calcification_logits is not None and calcification is not None and (calcification >= 0).any():
        terms["calcification"] = nn.functional.cross_entropy(out.calcification_logits, calcification, ignore_index=-1)
    return terms


@dataclass(frozen=True)
class AttributeLabels:
    """LIDC attribute-head targets of a crop set, indexed like it.

    Attributes:
        ratings: (N, 4) int64 1-5 ratings of ``LIDC_RATED_ATTRIBUTES``, 0 where the table has none.
        calcification: (N,) int64 index into ``LIDC_CALCIFICATION_PATTERNS`` (LIDC rating - 1), -1 where none.
    """

    ratings: np.ndarray
    calcification: np.ndarray

    @classmethod
    def from_records(cls, records: list[NoduleRecord]) -> "AttributeLabels":
        """Targets from table rows (in the crop set's order)."""
        ratings = np.array([[0 if v is None else v for v in r.attribute_ratings] for r in records], np.int64)
        calcification = np.array([-1 if r.calcification is None else r.calcification - 1 for r in records], np.int64)
        return cls(ratings.reshape(len(records), len(LIDC_RATED_ATTRIBUTES)), calcification)

    def priors(self) -> tuple[np.ndarray, np.ndarray]:
        """((4, 4) fraction with rating > k per attribute, (6,) calcification pattern fractions)."""
        exceed = np.array([[np.mean(r[r > 0] > k) if (r > 0).any() else 0.5 for k in range(1, RATING_LEVELS)]
                           for r in self.ratings.T])
        known = self.calcification[self.calcification >= 0]
        patterns = np.bincount(known, minlength=len(LIDC_CALCIFICATION_PATTERNS)) / max(len(known), 1)
        return exceed, patterns


def attribute_val_metrics(pred: dict[str, np.ndarray], labels: AttributeLabels) -> dict[str, Any]:
    """Model-selection metrics of the attribute heads on a crop set.

    Args:
        pred: {"attribute_exceed": (N, 4, 4) P(rating > k), "calcification": (N, 6) probabilities}.
        labels: the crop set's :class:`AttributeLabels`.

    Returns:
        {"<attribute>_kappa": quadratic kappa of the median rating, "attribute_kappa_mean": their mean,
        "calcification_macro_f1": macro-F1 of the most probable pattern}.
    """
    metrics: dict[str, Any] = {}
    median = 1 + (pred["attribute_exceed"] >= 0.5).sum(axis=2)
    for k, name in enumerate(LIDC_RATED_ATTRIBUTES):
        known = labels.ratings[:, k] > 0
        metrics[f"{name}_kappa"] = ordinal_agreement(labels.ratings[known, k], median[known, k])["quadratic_kappa"]
    kappas = [metrics[f"{n}_kappa"] for n in LIDC_RATED_ATTRIBUTES if metrics[f"{n}_kappa"] is not None]
    metrics["attribute_kappa_mean"] = float(np.mean(kappas)) if kappas else None
    known = labels.calcification >= 0
    matrix = confusion_matrix(labels.calcification[known], pred["calcification"][known].argmax(1),
                              len(LIDC_CALCIFICATION_PATTERNS))
    metrics["calcification_macro_f1"] = macro_f1(matrix)
    return metrics


def attribute_config(net: DenseSharpNet, init_from: Optional[str], pretrained_lr_factor: float) -> dict[str, Any]:
    """config.json entries describing the LIDC attribute heads and the grader fine-tuned from ({} for neither).

    Args:
        net: the trained network.
        init_from: the grader folder it was fine-tuned from, or None.
        pretrained_lr_factor: the learning-rate factor of the parts taken from ``init_from``.
    """
    out: dict[str, Any] = {}
    if net.config.lidc_attribute_heads:
        out["lidc_attributes"] = {
            "rated_attributes": list(LIDC_RATED_ATTRIBUTES),
            "rating_levels": RATING_LEVELS,
            "ordinal_model": "cumulative logit, P(rating > k) = sigmoid(s - theta_k), k = 1..4",
            "calcification_patterns": list(LIDC_CALCIFICATION_PATTERNS),
            "targets": "LIDC-IDRI radiologists' majority ratings (nodules.csv *_value), not pathology",
        }
    if init_from is not None:
        source = NoduleGrader.load(init_from)
        out["fine_tuned_from"] = {"weights_sha256": source.sha256, "best_epoch": source.config.get("best_epoch"),
                                  "pretrained_lr_factor": pretrained_lr_factor}
    return out
