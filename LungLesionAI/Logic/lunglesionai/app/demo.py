"""The embedded demo: synthesise a chest-CT phantom, analyse it, and score the findings against its exact truth.

Phantom numbers measure the pipeline on synthetic anatomy; they are not clinical performance.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lunglesionai.core.findings import Report
from lunglesionai.evaluation.metrics.luna16_hits import DetectionMatch
from lunglesionai.evaluation.phantom_protocol import score_against_phantom

__all__ = ["DemoResult", "run_phantom_demo"]


@dataclass(frozen=True)
class DemoResult:
    """What the demo found on the phantom.

    Attributes:
        report: the pipeline's Report.
        truth: the phantom's ground-truth table (list of dicts: id, center_lps_mm, diameter_mm, texture, ...).
        match: match of findings to truth by the LUNA16 evaluation script's rule
            (:func:`lunglesionai.evaluation.metrics.luna16_hits.match_luna16`).
        seconds: analysis time (phantom synthesis excluded).
        output: folder written.
    """

    report: Report
    truth: list[dict]
    match: DetectionMatch
    seconds: float
    output: Path

    def summary(self) -> str:
        """Human-readable table of the true nodules (found or missed) and the totals."""
        lines = [
            f"{'truth':<6}{'diam mm':>8}  {'texture':<13}{'attachment':<15}{'found by':<9}"
            f"{'diam mm':>8}  {'texture':<13}{'malignancy':>10}"
        ]
        nodules = self.report.nodules()
        for t, found_by in zip(self.truth, self.match.truth_finding):
            line = f"{t['id']:<6}{t['diameter_mm']:>8.1f}  {t['texture']:<13}{t['attachment']:<15}"
            if found_by < 0:
                lines.append(line + "missed")
                continue
            f = nodules[found_by]
            malignancy = "-" if f.malignancy_probability is None else f"{f.malignancy_probability:.2f}"
            lines.append(line + f"{f.id:<9}{f.diameter_mm:>8.1f}  {f.texture or '-':<13}{malignancy:>10}")
        m = self.match
        lines.append(
            f"phantom sensitivity {m.true_positives}/{m.n_truth} = {m.sensitivity:.2f}, "
            f"false positives {m.false_positives} per scan (LUNA16 script's rule: centre strictly within the true "
            f"radius, a nodule counts once), "
            f"analysis {self.seconds:.1f} s"
        )
        files = ", ".join(sorted(p.name for p in self.output.iterdir())) if self.output.is_dir() else ""
        lines.append(f"wrote {self.output} ({files})")
        lines.append("These are phantom results, not clinical performance.")
        return "\n".join(lines)


def run_phantom_demo(
    output: Path, *, seed: int = 0, preset: str = "clinical", overwrite: bool = False, progress: str = "bar"
) -> DemoResult:
    """Make the phantom (``PhantomConfig.clinical()`` or ``.small()`` with ``seed``), analyse it, write OUT.

    OUT holds the usual outputs plus ``phantom_ct.nrrd`` (the input CT) and ``ground_truth.json``, so the case
    can be opened in Slicer; all are written atomically.

    Raises:
        OutputExistsError: OUT exists and ``overwrite`` is False (a FileExistsError too).
        OutputPathError: OUT is a file, not writable, or holds files lunglesionai did not write.
        ValueError: unknown preset.
    """
    from lunglesionai.app.progress import progress_reporter
    from lunglesionai.core.output_folder import check_output_folder
    from lunglesionai.io.ct_files import save_volume
    from lunglesionai.io.outputs import write_outputs
    from lunglesionai.pipeline import analyze_volume
    from lunglesionai.synth import PhantomConfig, make_phantom

    presets = {"clinical": PhantomConfig.clinical, "small": PhantomConfig.small}
    if preset not in presets:
        raise ValueError(f"unknown phantom preset {preset!r}; choose one of {sorted(presets)}")
    check_output_folder(output, overwrite=overwrite)
    phantom = make_phantom(replace(presets[preset](), seed=seed))
    bar, update = progress_reporter(progress)
    t0 = time.perf_counter()
    with bar:
        report = analyze_volume(phantom.volume, progress=update)
    seconds = time.perf_counter() - t0
    from lunglesionai.clinical.patient import PatientInfo
    from lunglesionai.clinical.read import apply_clinical_read

    report = apply_clinical_read(report, PatientInfo(), "screening")  # a phantom has no patient: every value assumed
    truth = phantom.truth_table()
    extra = {
        "phantom_ct.nrrd": lambda path: save_volume(phantom.volume, path),
        "ground_truth.json": lambda path: path.write_text(json.dumps(truth, indent=2), encoding="utf-8"),
    }
    write_outputs(report, output, overwrite=overwrite, extra_files=extra, volume=phantom.volume, command="demo")
    return DemoResult(report, truth, score_against_phantom(report, truth), seconds, output)
