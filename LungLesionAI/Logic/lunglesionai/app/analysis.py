"""One analysis from input path to output folder: what ``lunglesionai analyze`` and the DICOM node run.

:func:`analyze_input` loads the CT, runs the pipeline, compares with a prior scan when given, makes the clinical
read and writes the output folder atomically (:func:`lunglesionai.io.outputs.write_outputs`). Which inputs give
which DICOM outputs:

* a DICOM series folder: ``nodules.seg.dcm`` (when a mass or nodule has a mask) and ``report.sr.dcm`` (always),
  referencing the analysed series' instances, in its study;
* NIfTI, NRRD, MetaImage (or a phantom saved as one) with ``dicom_out=True`` (``--dicom-out``): the CT is exported
  as a synthetic series into ``ct_series/`` (:data:`CT_SERIES_FOLDER`; UIDs derived from the voxels, so repeated
  runs give the same UIDs) and the SEG and SR reference it;
* without ``dicom_out``, or a DICOM series the reader resampled (non-uniform slice gaps) or a multi-frame DICOM
  file: no DICOM output; for the DICOM cases a warning in report.json says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from lunglesionai.core.findings import Report

__all__ = ["CT_SERIES_FOLDER", "DEFAULT_INDICATION", "AnalysisResult", "analyze_input", "run_analysis"]

logger = logging.getLogger(__name__)

DEFAULT_INDICATION = "screening"
"""The clinical read's indication unless one is given (``analyze --indication``'s default)."""
CT_SERIES_FOLDER = "ct_series"
"""Folder of the synthetic CT series that ``--dicom-out`` writes for non-DICOM input."""


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`run_analysis` produced: the final report (masks included) and the paths written."""

    report: Report
    paths: dict[str, Path]


def analyze_input(input_path: str | os.PathLike, out_dir: str | os.PathLike, *, series_uid: Optional[str] = None,
                  overwrite: bool = False, config=None, patient=None, indication: str = DEFAULT_INDICATION,
                  dicom_out: bool = False, progress: Optional[Callable[[str, float], None]] = None,
                  **options: Any) -> dict[str, Path]:
    """Load, analyse, clinical read, write the output folder (SEG and SR for DICOM input or ``dicom_out``).

    Args and errors as :func:`run_analysis`.

    Returns:
        The paths :func:`lunglesionai.io.outputs.write_outputs` returns (``"nodules.seg.dcm"`` and
        ``"report.sr.dcm"`` keyed by their names, ``"ct_series"`` the exported series folder).
    """
    return run_analysis(input_path, out_dir, series_uid=series_uid, overwrite=overwrite, config=config,
                        patient=patient, indication=indication, dicom_out=dicom_out, progress=progress,
                        **options).paths


def run_analysis(input_path: str | os.PathLike, out_dir: str | os.PathLike, *, series_uid: Optional[str] = None,
                 overwrite: bool = False, config=None, patient=None, indication: str = DEFAULT_INDICATION,
                 dicom_out: bool = False, progress: Optional[Callable[[str, float], None]] = None,
                 prior=None, include_identifiers: bool = False, max_memory_gb: Optional[float] = None,
                 extra_files: Optional[Mapping[str, Callable[[Path], None]]] = None, volume=None) -> AnalysisResult:
    """The body of ``lunglesionai analyze``.

    Args:
        input_path: DICOM series folder or file, NIfTI, NRRD or MetaImage CT.
        out_dir: the output folder (new, or one lunglesionai wrote with ``overwrite``).
        series_uid: the series to analyse in a DICOM folder with several CT series.
        overwrite: replace an output folder lunglesionai wrote.
        config: :class:`lunglesionai.pipeline.PipelineConfig` (None: defaults).
        patient: :class:`lunglesionai.clinical.patient.PatientInfo` facts for Brock and Lung-RADS (None: from the
            DICOM header where it has them, else the defaults report.json lists under ``exam.assumed``).
        indication: "screening" (Lung-RADS; the CLI's default) or "incidental" (Fleischner too).
        dicom_out: for non-DICOM input, also export the CT as ``ct_series/`` and write SEG and SR referencing it.
        progress: ``progress(stage, fraction)`` callback of the pipeline.
        prior: what :func:`lunglesionai.app.followup_command.resolve_prior` returned (None: no follow-up).
        include_identifiers: put the DICOM patient name and ID into report.json / report.html.
        max_memory_gb: memory budget of the analysis (:func:`lunglesionai.io.ct_files.load_volume`).
        extra_files: more files for the output folder (``{name: writer(path)}``), e.g. the CLI's run log.
        volume: the CT of ``input_path`` already read with :func:`lunglesionai.io.ct_files.load_volume` (the CLI
            reads it before its progress bar starts, so that a bad input gives one error line); None: read here.

    Returns:
        :class:`AnalysisResult`.

    Raises:
        OutputPathError / OutputExistsError: the output folder is refused (before the CT is read).
        CTInputError: the CT cannot be used (:func:`lunglesionai.io.ct_files.load_volume`).
        ValueError: bad clinical facts or configuration.
    """
    from lunglesionai.core.output_folder import check_output_folder
    from lunglesionai.io.ct_files import load_volume

    inputs = [input_path] + ([prior.path] if getattr(prior, "path", None) else [])
    out = check_output_folder(out_dir, overwrite=overwrite, inputs=inputs)
    if volume is None:
        volume = load_volume(input_path, series_uid=series_uid, max_memory_gb=max_memory_gb)
    from lunglesionai.clinical.patient import PatientInfo
    from lunglesionai.clinical.read import apply_clinical_read
    from lunglesionai.io.outputs import write_outputs
    from lunglesionai.pipeline import PipelineConfig, analyze_volume

    config = config or PipelineConfig()
    patient = patient if patient is not None else PatientInfo()
    report = analyze_volume(volume, config, progress=progress)
    dicom_input = _is_dicom_input(input_path)
    if dicom_input:
        from lunglesionai.io.dicom_description import describe_dicom_input

        description = describe_dicom_input(input_path, series_uid=series_uid, include_identifiers=include_identifiers)
        report = replace(report, input=replace(report.input, description=description))
    follow_up, prior_findings = None, ()
    if prior is not None:
        from lunglesionai.app.followup_command import compare_with_prior

        report, follow_up, prior_report = compare_with_prior(prior, volume, report, config)
        prior_findings = prior_report.findings
    report = apply_clinical_read(report, patient, indication, follow_up=follow_up)
    report, dicom_files = _dicom_outputs(report, volume, input_path, series_uid, dicom_input, dicom_out)
    paths = write_outputs(report, out, overwrite=overwrite, volume=volume,
                          extra_files={**dicom_files, **dict(extra_files or {})},
                          prior_volume=prior.volume if prior is not None else None, prior_findings=prior_findings)
    return AnalysisResult(report, paths)


def _is_dicom_input(input_path: str | os.PathLike) -> bool:
    from pydicom.misc import is_dicom

    path = Path(input_path)
    return path.is_dir() or (path.is_file() and is_dicom(path))


def _dicom_outputs(report: Report, volume, input_path, series_uid: Optional[str], dicom_input: bool,
                   dicom_out: bool) -> tuple[Report, dict[str, Callable[[Path], None]]]:
    """The SEG/SR writers (and the exported series for non-DICOM input with ``dicom_out``); a DICOM input whose
    grid is not its series' slices gets a warning in the report instead."""
    from lunglesionai.io.dicom_export import write_dicom_series
    from lunglesionai.io.dicom_results import dicom_result_writers, load_source_series, synthetic_ct_datasets

    if dicom_input:
        try:
            return report, dicom_result_writers(report, load_source_series(input_path, series_uid))
        except (ValueError, AttributeError, KeyError, TypeError) as error:  # e.g. a header highdicom cannot use
            warning = f"DICOM SEG and SR not written: {error}"
            logger.warning("%s", warning)
            return replace(report, warnings=[*report.warnings, warning]), {}
    if not dicom_out:
        return report, {}
    datasets = synthetic_ct_datasets(volume, series_description=f"CT exported from {Path(input_path).name}"[:64])
    writers = {CT_SERIES_FOLDER: lambda folder: write_dicom_series(datasets, folder)}
    return report, {**writers, **dicom_result_writers(report, datasets)}
