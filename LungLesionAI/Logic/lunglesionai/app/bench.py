"""``lunglesionai bench``: per-stage seconds and peak memory of the pipeline on a clinical-size phantom.

Timings are medians over ``repeats`` runs on the same phantom; peak memory is the process's peak resident set
size (``resource.getrusage``, Linux/macOS), which includes the phantom itself.
"""

from __future__ import annotations

import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lunglesionai.pipeline import PipelineConfig, analyze_volume

__all__ = ["BenchConfig", "run_benchmark", "format_benchmark"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Args:
        shape_zyx: phantom size (Z, Y, X); the issue's reference is 300×512×512.
        spacing_mm: (x, y, z) mm; reference 0.7×0.7×1.0.
        repeats: pipeline runs; per-stage medians are reported.
        seed: phantom seed.
    """

    shape_zyx: tuple[int, int, int] = (300, 512, 512)
    spacing_mm: tuple[float, float, float] = (0.7, 0.7, 1.0)
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_benchmark(config: BenchConfig = BenchConfig(),
                  pipeline: PipelineConfig = PipelineConfig(uld=True)) -> dict[str, Any]:
    """Time each pipeline stage (and the file export) on a phantom; universal lesion detection is included (it is
    opt-in in ``analyze``) so its speed is measured too.

    Returns:
        dict with ``volume_shape_zyx``, ``spacing_mm``, ``device``, ``stages`` ({stage: median seconds}),
        ``total_s`` (median of per-run totals), ``peak_rss_mb``, ``runs`` (every run's stage seconds),
        ``phantom_s`` (time to synthesise the phantom, not part of the total), ``n_findings``, ``cpu``,
        ``grading_s_per_finding`` (median; None when grading did not run or found nothing).
    """
    from lunglesionai.io.outputs import write_outputs
    from lunglesionai.synth import PhantomConfig, make_phantom

    t0 = time.perf_counter()
    phantom = make_phantom(
        PhantomConfig(shape_zyx=config.shape_zyx, spacing_mm=config.spacing_mm, seed=config.seed)
    )
    phantom_s = time.perf_counter() - t0
    runs = []
    for i in range(config.repeats):
        logger.info("bench run %d/%d", i + 1, config.repeats)
        report = analyze_volume(phantom.volume, pipeline)
        timings = dict(report.timings_s)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_outputs(report, Path(tmp) / "out")
            timings["export"] = time.perf_counter() - t0
        timings["total"] = sum(timings.values())
        if "grading" in timings and report.findings:
            timings["grading_per_finding"] = timings["grading"] / len(report.findings)
        runs.append(timings)
    per_run = ("total", "grading_per_finding")
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in per_run}
    return {
        "volume_shape_zyx": list(config.shape_zyx),
        "spacing_mm": list(config.spacing_mm),
        "device": "cpu",
        "cpu": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores",
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "total_s": round(statistics.median(r["total"] for r in runs), 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "repeats": config.repeats,
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "phantom_s": round(phantom_s, 3),
        "grading_s_per_finding": _median_of(runs, "grading_per_finding"),
        "n_findings": len(report.findings),
    }


def _median_of(runs: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 4) if values else None


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def format_benchmark(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`run_benchmark`'s result."""
    shape = "×".join(str(n) for n in result["volume_shape_zyx"])
    spacing = "×".join(f"{s:g}" for s in result["spacing_mm"])
    lines = [
        f"volume {shape} (z×y×x) at {spacing} mm (x×y×z), {result['device']} ({result['cpu']}), "
        f"median of {result['repeats']} runs",
        f"{'stage':<14}{'seconds':>10}",
    ]
    lines += [f"{stage:<14}{seconds:>10.2f}" for stage, seconds in result["stages"].items()]
    lines.append(f"{'total':<14}{result['total_s']:>10.2f}")
    if result.get("grading_s_per_finding") is not None:
        lines.append(f"grading {result['grading_s_per_finding']:.3f} s per finding ({result['n_findings']} findings)")
    lines.append(f"peak RSS {result['peak_rss_mb']:.0f} MB (phantom synthesis {result['phantom_s']:.1f} s, not in total)")
    return "\n".join(lines)

