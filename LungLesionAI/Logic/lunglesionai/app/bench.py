"""``lunglesionai bench``: per-stage seconds and peak memory of the pipeline on a clinical-size phantom or on a
given real CT (``--input``).

Timings are medians over ``repeats`` runs on the same volume; peak memory is the process's peak resident set
size (``resource.getrusage``, Linux/macOS), which includes the volume itself. Reading the input (or making the
phantom) is timed apart and not part of ``total_s``.
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
from typing import Any, Optional

from lunglesionai.pipeline import PipelineConfig, analyze_volume

__all__ = ["BenchConfig", "run_benchmark", "format_benchmark"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Args:
        shape_zyx: phantom size (Z, Y, X); the issue's reference is 300×512×512 (phantom only).
        spacing_mm: (x, y, z) mm; reference 0.7×0.7×1.0 (phantom only).
        repeats: pipeline runs; per-stage medians are reported.
        seed: phantom seed (phantom only).
        input_path: a real CT to time instead of the phantom: anything
            :func:`lunglesionai.io.ct_files.load_volume` reads (DICOM folder or file, NIfTI, NRRD, MetaImage).
        uld: include universal lesion detection (opt-in in ``analyze``; on by default here so its speed is
            measured too; ``--no-uld`` times the default analysis).

    Raises:
        ValueError: ``repeats`` < 1.
    """

    shape_zyx: tuple[int, int, int] = (300, 512, 512)
    spacing_mm: tuple[float, float, float] = (0.7, 0.7, 1.0)
    repeats: int = 3
    seed: int = 0
    input_path: Optional[str] = None
    uld: bool = True

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_benchmark(config: BenchConfig = BenchConfig(),
                  pipeline: Optional[PipelineConfig] = None) -> dict[str, Any]:
    """Time each pipeline stage (and the file export) on a phantom, or on ``config.input_path``; universal lesion
    detection is included unless ``config.uld`` is False (it is opt-in in ``analyze``) so its speed is measured too.

    Args:
        config: what to time.
        pipeline: the pipeline's settings; ``None``: the defaults with ``uld=config.uld``.

    Returns:
        dict with ``volume_shape_zyx``, ``spacing_mm``, ``device``, ``stages`` ({stage: median seconds}),
        ``total_s`` (median of per-run totals), ``peak_rss_mb``, ``runs`` (every run's stage seconds),
        ``phantom_s`` (time to synthesise the phantom, not part of the total; None with an input), ``load_s``
        (time to read the input, not part of the total; None for the phantom), ``input`` (the input's path as
        given; None for the phantom), ``uld``, ``n_findings``, ``cpu``, ``grading_s_per_finding`` (median; None
        when grading did not run or found nothing).

    Raises:
        lunglesionai.core.ct_checks.CTInputError: the input is not a readable CT (a ValueError; the CLI exits 2).
        FileNotFoundError: the input does not exist.
    """
    from lunglesionai.io.outputs import write_outputs

    pipeline = pipeline if pipeline is not None else PipelineConfig(uld=config.uld)
    volume, prepare_s = _bench_volume(config)
    runs = []
    for i in range(config.repeats):
        logger.info("bench run %d/%d", i + 1, config.repeats)
        report = analyze_volume(volume, pipeline)
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
        "input": config.input_path,
        "uld": pipeline.uld,
        "volume_shape_zyx": list(volume.shape_zyx),
        "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
        "device": "cpu",
        "cpu": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores",
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "total_s": round(statistics.median(r["total"] for r in runs), 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "repeats": config.repeats,
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "phantom_s": None if config.input_path else round(prepare_s, 3),
        "load_s": round(prepare_s, 3) if config.input_path else None,
        "grading_s_per_finding": _median_of(runs, "grading_per_finding"),
        "n_findings": len(report.findings),
    }


def _bench_volume(config: BenchConfig):
    """(volume, seconds to make or read it): the phantom, or the CT at ``config.input_path``."""
    t0 = time.perf_counter()
    if config.input_path is not None:
        from lunglesionai.io.ct_files import load_volume

        volume = load_volume(config.input_path)
    else:
        from lunglesionai.synth import PhantomConfig, make_phantom

        volume = make_phantom(
            PhantomConfig(shape_zyx=config.shape_zyx, spacing_mm=config.spacing_mm, seed=config.seed)
        ).volume
    return volume, time.perf_counter() - t0


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
    what = f"input {result['input']}: " if result.get("input") else "phantom: "
    lines = [
        f"{what}volume {shape} (z×y×x) at {spacing} mm (x×y×z), {result['device']} ({result['cpu']}), "
        f"median of {result['repeats']} runs{'' if result.get('uld', True) else ', without ULD'}",
        f"{'stage':<14}{'seconds':>10}",
    ]
    lines += [f"{stage:<14}{seconds:>10.2f}" for stage, seconds in result["stages"].items()]
    lines.append(f"{'total':<14}{result['total_s']:>10.2f}")
    if result.get("grading_s_per_finding") is not None:
        lines.append(f"grading {result['grading_s_per_finding']:.3f} s per finding ({result['n_findings']} findings)")
    prepared = (f"reading the input {result['load_s']:.1f} s" if result.get("load_s") is not None
                else f"phantom synthesis {result['phantom_s']:.1f} s")
    lines.append(f"peak RSS {result['peak_rss_mb']:.0f} MB ({prepared}, not in total)")
    return "\n".join(lines)

