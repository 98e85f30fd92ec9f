"""``lunglesionai evaluate phantom``: detection sensitivity and false positives on procedural phantoms.

Each phantom is analysed once; operating points are then read off by keeping findings whose detection score is at
least a threshold (the same set ``PipelineConfig(min_score=threshold)`` keeps, because duplicate merging and the
candidate cap both keep higher scores first). Hits follow the LUNA16 evaluation script's rule, the same function the
LUNA16 protocol uses (:func:`lunglesionai.evaluation.metrics.luna16_hits.match_luna16`).
Phantom results measure the pipeline on synthetic anatomy; they are not clinical performance.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lunglesionai.core.findings import Report
from lunglesionai.evaluation.metrics.luna16_hits import LUNA16_HIT_RULE, DetectionMatch, match_luna16
from lunglesionai.pipeline import PipelineConfig, analyze_volume

__all__ = ["score_against_phantom", "PhantomEvaluationConfig", "evaluate_phantoms", "format_phantom_metrics"]

logger = logging.getLogger(__name__)


def score_against_phantom(report: Report, truth: list[dict]) -> DetectionMatch:
    """Match a report's nodule findings to a phantom's truth table by the LUNA16 script's rule.

    Args:
        report: the pipeline's Report; each nodule finding is a candidate at ``center_lps_mm`` (LPS mm) with its
            ``detection_score`` (0 when unset), which decides which of two findings on one nodule counts.
        truth: the phantom's truth table: dicts with ``center_lps_mm`` (3 floats, LPS mm) and ``diameter_mm``.

    Returns:
        DetectionMatch over (F,) findings in ``report.nodules()`` order and (T,) truth rows.

    Raises:
        ValueError: a centre is not 3 finite numbers or a true diameter is not > 0.
    """
    nodules = report.nodules()
    return match_luna16(
        np.array([f.center_lps_mm for f in nodules], dtype=float).reshape(-1, 3),
        np.array([f.detection_score or 0.0 for f in nodules], dtype=float),
        np.array([t["center_lps_mm"] for t in truth], dtype=float).reshape(-1, 3),
        np.array([t["diameter_mm"] for t in truth], dtype=float),
    )


@dataclass(frozen=True)
class PhantomEvaluationConfig:
    """Which phantoms and operating points to evaluate.

    Args:
        seeds: phantom seeds, one scan each.
        preset: "clinical" or "small" (``PhantomConfig`` presets).
        thresholds: detection-score operating points to report.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3)
    preset: str = "clinical"
    thresholds: tuple[float, ...] = (0.0, 0.45, 0.5, 0.55, 0.6)

    def __post_init__(self) -> None:
        """Raises ValueError: no seed, an unknown preset, or a threshold outside [0, 1]."""
        if not self.seeds:
            raise ValueError("seeds must name at least one phantom")
        if self.preset not in ("clinical", "small"):
            raise ValueError(f"preset must be 'clinical' or 'small', got {self.preset!r}")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie within [0, 1], got {self.thresholds}")


def _above(report: Report, threshold: float) -> Report:
    """The report with only the findings whose detection score is >= ``threshold`` (unset scores count as 0)."""
    return replace(report, findings=[f for f in report.findings if (f.detection_score or 0.0) >= threshold])


def evaluate_phantoms(
    config: PhantomEvaluationConfig = PhantomEvaluationConfig(), pipeline: PipelineConfig = PipelineConfig()
) -> dict[str, Any]:
    """Analyse one phantom per seed and score every operating point.

    Returns:
        JSON-ready dict: ``n_scans``, ``n_nodules``, ``operating_points`` (list of {min_score, sensitivity,
        fps_per_scan, true_positives}), ``by_texture`` / ``by_attachment`` / ``by_size_mm`` sensitivities at
        ``pipeline.min_score``, ``seconds_per_scan`` (median), ``preset``, ``seeds``, ``hit_criterion``.
    """
    from lunglesionai.synth import PhantomConfig, make_phantom

    preset = {"clinical": PhantomConfig.clinical, "small": PhantomConfig.small}[config.preset]
    scans = []
    for i, seed in enumerate(config.seeds, start=1):
        logger.info("phantom %d/%d (seed %d)", i, len(config.seeds), seed)
        phantom = make_phantom(preset(seed=seed))
        report = analyze_volume(phantom.volume, replace(pipeline, min_score=0.0))
        scans.append((report, phantom.truth_table(), sum(report.timings_s.values())))
    n_nodules = sum(len(truth) for _, truth, _ in scans)
    points = []
    for threshold in config.thresholds:
        matches = [score_against_phantom(_above(r, threshold), t) for r, t, _ in scans]
        tp = sum(m.true_positives for m in matches)
        points.append(
            {
                "min_score": threshold,
                "true_positives": tp,
                "sensitivity": tp / n_nodules if n_nodules else float("nan"),
                "fps_per_scan": sum(m.false_positives for m in matches) / len(scans),
            }
        )
    return {
        "preset": config.preset,
        "seeds": list(config.seeds),
        "n_scans": len(scans),
        "n_nodules": n_nodules,
        "hit_criterion": LUNA16_HIT_RULE,
        "operating_points": points,
        **_sensitivity_by_group(scans, pipeline.min_score or 0.0),
        "seconds_per_scan": float(np.median([s for _, _, s in scans])),
        "note": "procedural phantom: not clinical performance",
    }


def _size_bin(diameter_mm: float) -> str:
    """Size group of a true diameter in mm: "<6", "6-10" or ">=10"."""
    return "<6" if diameter_mm < 6 else ("6-10" if diameter_mm < 10 else ">=10")


def _sensitivity_by_group(scans, threshold: float) -> dict[str, dict[str, dict[str, float]]]:
    """Found / total / sensitivity by texture, attachment and size at ``threshold``, over (report, truth, s) scans."""
    groups: dict[str, dict[str, list[int]]] = {"by_texture": {}, "by_attachment": {}, "by_size_mm": {}}
    counts: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in groups}
    for report, truth, _ in scans:
        hit = score_against_phantom(_above(report, threshold), truth).hit_truth
        for t, found in zip(truth, hit):
            for key, value in (("by_texture", t["texture"]), ("by_attachment", t["attachment"]),
                               ("by_size_mm", _size_bin(t["diameter_mm"]))):
                counts[key][value][0] += int(found)
                counts[key][value][1] += 1
    return {
        key: {value: {"found": f, "n": n, "sensitivity": f / n} for value, (f, n) in sorted(table.items())}
        for key, table in counts.items()
    }


def format_phantom_metrics(metrics: dict[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_phantoms`' result."""
    lines = [
        f"{metrics['n_scans']} {metrics['preset']} phantoms (seeds {metrics['seeds']}), {metrics['n_nodules']} "
        f"nodules; {metrics['hit_criterion']}",
        f"{'min_score':>9}  {'sensitivity':>11}  {'FPs/scan':>8}",
    ]
    for p in metrics["operating_points"]:
        lines.append(f"{p['min_score']:>9.2f}  {p['sensitivity']:>11.2f}  {p['fps_per_scan']:>8.1f}")
    for key in ("by_texture", "by_attachment", "by_size_mm"):
        parts = [f"{k} {v['found']}/{v['n']}" for k, v in metrics[key].items()]
        lines.append(f"{key}: " + ", ".join(parts))
    lines.append(f"median analysis time {metrics['seconds_per_scan']:.1f} s per scan; {metrics['note']}")
    return "\n".join(lines)

