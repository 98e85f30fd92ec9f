"""Nodule detection scored by the LUNA16 protocol: FROC at 1/8…8 false positives per scan and CPM.

Protocol (Setio et al., "Validation, comparison, and combination of algorithms for automatic detection of pulmonary
nodules in computed tomography images: the LUNA16 challenge", Medical Image Analysis 42:1-13, 2017,
doi:10.1016/j.media.2017.06.015), reproduced from the challenge's ``noduleCADEvaluationLUNA16.py``:

* **hit rule**: :func:`lunglesionai.evaluation.metrics.luna16_hits.match_luna16`, the one implementation of the
  script's rule (stated exactly there): a prediction hits a reference nodule when its centre lies strictly within
  the nodule's radius (Euclidean distance < ``diameter_mm / 2``, LPS mm); each reference nodule counts once, with
  the highest score of the predictions that hit it; further hits on it are neither true nor false positives; a
  prediction inside two nodules counts for both (the script warns about that); predictions that hit no reference
  nodule but lie within an **excluded** finding (``annotations_excluded.csv``: non-nodules, nodules < 3 mm,
  nodules of one or two readers) are ignored; an excluded finding of unknown size (``diameter_mm`` = -1) gets a
  radius of :data:`EXCLUDED_DEFAULT_DIAMETER_MM` / 2 = 5 mm, as in the script;
* every other prediction is a false positive; FPs per scan divide by the number of scans evaluated (scans without
  nodules or without predictions included);
* FROC: for every distinct score threshold, (FPs at score >= t) / scans and (nodules whose best score >= t) / all
  nodules; the sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs per scan is read by linear interpolation of that curve
  (``np.interp``, as the script does), and the **CPM** (competition performance metric) is their mean;
* 95 % confidence intervals: bootstrap over scans (resampled with replacement), percentile interval.

MONAI's ``compute_froc_curve_data`` / ``compute_froc_score`` give the same numbers on the same hits (the tests check
it); MONAI's own hit finding (``compute_fp_tp_probs``) is CAMELYON16's label-mask lookup, not this rule.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lunglesionai.datasets.luna16 import (
    PREDICTION_COLUMNS,
    find_images,
    read_annotations,
    read_predictions,
    read_seriesuids,
    write_luna16_csv,
)
from lunglesionai.evaluation.metrics.luna16_hits import (
    EXCLUDED_DEFAULT_DIAMETER_MM,
    LUNA16_HIT_RULE,
    finite_rows,
    match_luna16,
)

__all__ = [
    "EXCLUDED_DEFAULT_DIAMETER_MM",
    "FP_RATES",
    "HIT_CRITERION",
    "ScanMatch",
    "evaluate_detection",
    "evaluate_detection_lidc",
    "evaluate_detection_tables",
    "froc_curve",
    "froc_luna16",
    "match_scan",
    "sensitivity_at",
]

logger = logging.getLogger(__name__)

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per scan at which LUNA16 reads the FROC curve; CPM is the mean sensitivity there."""
HIT_CRITERION = LUNA16_HIT_RULE
"""The hit rule as written into the metrics JSON (``hit_criterion``)."""
_LUNG_KINDS = ("nodule", "mass")
"""Findings that become predictions: nodules and masses (a nodule over 30 mm is reported as a mass)."""
DEFAULT_BOOTSTRAP = 1000
"""Bootstrap resamples (over scans) for the 95 % confidence intervals."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ScanMatch:
    """One scan's predictions matched to its reference nodules.

    Attributes:
        nodule_scores: (T,) best score of the predictions hitting each reference nodule; ``-inf`` when missed.
        fp_scores: (F,) scores of the false-positive predictions.
        n_ignored: predictions ignored because they lie within an excluded finding only.
        n_duplicates: hits beyond the highest-scoring one on each nodule, summed over nodules (neither TP nor FP).
    """

    nodule_scores: np.ndarray
    fp_scores: np.ndarray
    n_ignored: int = 0
    n_duplicates: int = 0


def match_scan(predictions: np.ndarray, annotations: np.ndarray, excluded: np.ndarray | None = None) -> ScanMatch:
    """Match one scan's predictions by the LUNA16 script's rule (:func:`match_luna16`, the one implementation).

    Args:
        predictions: (N, 4) ``[x, y, z, score]``, LPS mm.
        annotations: (T, 4) reference nodules ``[x, y, z, diameter_mm]``, diameters > 0.
        excluded: (E, 4) excluded findings ``[x, y, z, diameter_mm]``; a negative diameter means unknown
            (:data:`EXCLUDED_DEFAULT_DIAMETER_MM` is used).

    Returns:
        ScanMatch.

    Raises:
        ValueError: an array is not (n, 4), holds non-finite values, or a reference diameter is not > 0.

    Example:
        >>> m = match_scan(np.array([[0, 0, 0, 0.9], [1, 0, 0, 0.5], [40, 0, 0, 0.7]]), np.array([[0, 0, 0, 6.0]]))
        >>> m.nodule_scores.tolist(), m.fp_scores.tolist(), m.n_duplicates
        ([0.9], [0.7], 1)
    """
    pred = _as_table(predictions, "predictions")
    truth = _as_table(annotations, "annotations")
    excl = _as_table(excluded if excluded is not None else np.zeros((0, 4)), "excluded")
    m = match_luna16(pred[:, :3], pred[:, 3], truth[:, :3], truth[:, 3], excl[:, :3], excl[:, 3])
    return ScanMatch(
        nodule_scores=m.nodule_scores,
        fp_scores=m.fp_scores.copy(),
        n_ignored=m.n_ignored,
        n_duplicates=m.n_duplicates,
    )


def froc_curve(nodule_scores: np.ndarray, fp_scores: np.ndarray, n_scans: int) -> tuple[np.ndarray, np.ndarray]:
    """The FROC curve: one point per distinct score threshold, plus the origin.

    Args:
        nodule_scores: (T,) best score per reference nodule, ``-inf`` when missed (T >= 1).
        fp_scores: (F,) false-positive scores.
        n_scans: scans evaluated (>= 1).

    Returns:
        (fps_per_scan, sensitivity): (P,) arrays, thresholds descending, so both non-decreasing; the first point
        is (0, 0).

    Raises:
        ValueError: no reference nodule, or ``n_scans`` < 1.
    """
    nodules = np.asarray(nodule_scores, dtype=float).reshape(-1)
    fps = np.asarray(fp_scores, dtype=float).reshape(-1)
    if nodules.size == 0:
        raise ValueError("FROC needs at least one reference nodule")
    if n_scans < 1:
        raise ValueError(f"n_scans must be >= 1, got {n_scans}")
    hit = nodules[np.isfinite(nodules)]
    thresholds = np.unique(np.concatenate([hit, fps]))[::-1]
    fp_counts = np.searchsorted(np.sort(-fps), -thresholds, side="right")
    tp_counts = np.searchsorted(np.sort(-hit), -thresholds, side="right")
    fps_per_scan = np.concatenate([[0.0], fp_counts / float(n_scans)])
    sensitivity = np.concatenate([[0.0], tp_counts / float(nodules.size)])
    return fps_per_scan, sensitivity


def sensitivity_at(fps_per_scan: np.ndarray, sensitivity: np.ndarray, rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """Read a FROC curve at given FP rates by linear interpolation (``np.interp``, as LUNA16's script).

    Args:
        fps_per_scan, sensitivity: (P,) curve from :func:`froc_curve` (non-decreasing).
        rates: FP-per-scan rates.

    Returns:
        (len(rates),) sensitivities; beyond the curve's last FP rate, its highest sensitivity.
    """
    return np.interp(np.asarray(rates, dtype=float), fps_per_scan, sensitivity)


def froc_luna16(
    predictions_by_scan: Mapping[str, np.ndarray],
    annotations_by_scan: Mapping[str, np.ndarray],
    excluded_by_scan: Mapping[str, np.ndarray] | None,
    n_scans: int,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """FROC sensitivities at 1/8…8 FPs per scan and CPM, LUNA16 protocol, with bootstrap 95 % CIs over scans.

    Args:
        predictions_by_scan: seriesuid -> (N, 4) ``[x, y, z, score]`` (LPS mm).
        annotations_by_scan: seriesuid -> (T, 4) reference nodules ``[x, y, z, diameter_mm]``.
        excluded_by_scan: seriesuid -> (E, 4) excluded findings (diameter -1 = unknown), or None.
        n_scans: scans evaluated (the FP divisor); at least the number of distinct seriesuids in the predictions
            and annotations (the rest are scans with neither).
        n_bootstrap: bootstrap resamples of the scans for the CIs (0: none).
        seed: seed of the bootstrap's random generator.

    Returns:
        JSON-ready dict: ``n_scans``, ``n_nodules``, ``n_detected`` (nodules hit at any score), ``n_predictions``,
        ``n_false_positives``, ``n_ignored_excluded``, ``n_duplicates``, ``froc`` ({"0.125": s, …, "8": s}), ``cpm``,
        ``fp_rates``, ``hit_criterion``, and with bootstrap ``cpm_ci95`` [low, high], ``froc_ci95`` {rate: [low,
        high]}, ``n_bootstrap``.

    Raises:
        ValueError: no reference nodule, ``n_scans`` smaller than the scans named, or a malformed array.

    Example:
        >>> m = froc_luna16({"a": np.array([[0, 0, 0, 0.9]])}, {"a": np.array([[0, 0, 0, 8.0]])}, None, 1)
        >>> m["cpm"]
        1.0
    """
    excluded_by_scan = excluded_by_scan or {}
    scans = list(dict.fromkeys([*annotations_by_scan, *predictions_by_scan]))
    if n_scans < len(scans):
        raise ValueError(f"n_scans = {n_scans} is less than the {len(scans)} scans named in predictions/annotations")
    empty = np.zeros((0, 4))
    matches = [
        match_scan(predictions_by_scan.get(s, empty), annotations_by_scan.get(s, empty), excluded_by_scan.get(s))
        for s in scans
    ]
    nodules = np.concatenate([m.nodule_scores for m in matches]) if matches else np.zeros(0)
    fps = np.concatenate([m.fp_scores for m in matches]) if matches else np.zeros(0)
    sens = sensitivity_at(*froc_curve(nodules, fps, n_scans))
    result = {
        "n_scans": int(n_scans),
        "n_nodules": int(nodules.size),
        "n_detected": int(np.isfinite(nodules).sum()),
        "n_predictions": int(sum(len(np.reshape(p, (-1, 4))) for p in predictions_by_scan.values())),
        "n_false_positives": int(fps.size),
        "n_ignored_excluded": int(sum(m.n_ignored for m in matches)),
        "n_duplicates": int(sum(m.n_duplicates for m in matches)),
        "froc": {_rate_key(r): float(s) for r, s in zip(FP_RATES, sens)},
        "cpm": float(np.mean(sens)),
        "fp_rates": list(FP_RATES),
        "hit_criterion": HIT_CRITERION,
    }
    if n_bootstrap > 0:
        result.update(_bootstrap(matches, n_scans, n_bootstrap, seed))
    return result


def _bootstrap(matches: list[ScanMatch], n_scans: int, n_bootstrap: int, seed: int) -> dict:
    """Percentile CIs of the FROC points and CPM over scans resampled with replacement (LUNA16 script's scheme)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        picked = [matches[i] for i in rng.integers(0, n_scans, size=n_scans) if i < len(matches)]
        nodules = np.concatenate([m.nodule_scores for m in picked] + [np.zeros(0)])
        if nodules.size == 0:
            continue
        fps = np.concatenate([m.fp_scores for m in picked] + [np.zeros(0)])
        samples.append(sensitivity_at(*froc_curve(nodules, fps, n_scans)))
    if not samples:
        return {"n_bootstrap": 0}
    sens = np.asarray(samples)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(sens, [tail, 100 - tail], axis=0)
    cpm_low, cpm_high = np.percentile(sens.mean(axis=1), [tail, 100 - tail])
    return {
        "cpm_ci95": [float(cpm_low), float(cpm_high)],
        "froc_ci95": {_rate_key(r): [float(a), float(b)] for r, a, b in zip(FP_RATES, low, high)},
        "n_bootstrap": len(samples),
    }


def evaluate_detection(
    images_dir: str | os.PathLike | None,
    annotations_csv: str | os.PathLike,
    excluded_csv: str | os.PathLike | None = None,
    pipeline_config=None,
    predictions_csv: str | os.PathLike | None = None,
    *,
    seriesuids_csv: str | os.PathLike | None = None,
    save_predictions_csv: str | os.PathLike | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
) -> dict:
    """Run the pipeline on LUNA16-style data (or read its predictions) and score it by the LUNA16 protocol.

    The scans evaluated are those of ``seriesuids_csv`` when given, else every seriesuid in ``annotations_csv``.
    Without ``predictions_csv``, each scan's image ``<seriesuid>.{mhd,mha,nii.gz,nii,nrrd}`` (also under
    ``subsetN/``) is analysed with :func:`lunglesionai.pipeline.analyze_volume`; each nodule or mass finding becomes a
    prediction at its ``center_lps_mm`` with its ``detection_score``. Progress is logged as "case i/N". The
    tables are then scored by :func:`evaluate_detection_tables`.

    Args:
        images_dir: folder of the images (unused, may be None, when ``predictions_csv`` is given).
        annotations_csv: reference nodules, LUNA16 columns ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (LPS mm).
        excluded_csv: excluded findings (same columns; diameter -1 allowed), or None.
        pipeline_config: :class:`lunglesionai.pipeline.PipelineConfig` (default settings when None).
        predictions_csv: LUNA16 submission ``seriesuid,coordX,coordY,coordZ,probability``; the pipeline is not run.
        seriesuids_csv: the scans to evaluate (LUNA16 ``seriesuids.csv``), e.g. to count nodule-free scans.
        save_predictions_csv: also write the predictions used, in the submission format, to this file.
        n_bootstrap: bootstrap resamples for the 95 % CIs (0: none).

    Returns:
        The :func:`froc_luna16` dict plus ``timings_s`` (seriesuid -> seconds of analysis, empty when predictions
        were read), ``median_scan_s``, ``per_scan`` (seriesuid -> nodules, predictions, hits) and ``inputs``.

    Raises:
        Luna16TableError: a table is malformed.
        FileNotFoundError: a scan has no image, or ``images_dir`` is missing while no predictions are given.
        ValueError: no reference nodule among the evaluated scans.

    Example:
        >>> metrics = evaluate_detection("composites/", "composites/annotations.csv")  # doctest: +SKIP
        >>> metrics["cpm"]  # doctest: +SKIP
    """
    annotations = read_annotations(annotations_csv)
    excluded = read_annotations(excluded_csv, allow_unknown_diameter=True) if excluded_csv else {}
    scans = read_seriesuids(seriesuids_csv) if seriesuids_csv else list(annotations)
    predictions, load_scan = None, None
    if predictions_csv:
        read = read_predictions(predictions_csv)
        predictions = {s: read[s] for s in scans if s in read}
        if len(predictions) < len(read):
            logger.info("%d scan(s) in %s are not evaluated; ignored", len(read) - len(predictions), predictions_csv)
    else:
        load_scan = _image_loader(images_dir, scans)
    metrics = evaluate_detection_tables(
        scans, annotations, excluded, load_scan=load_scan, predictions_by_scan=predictions,
        pipeline_config=pipeline_config, save_predictions_csv=save_predictions_csv, n_bootstrap=n_bootstrap,
    )
    metrics["inputs"] = {
        "images": str(images_dir) if images_dir and not predictions_csv else None,
        "annotations": str(annotations_csv),
        "excluded": str(excluded_csv) if excluded_csv else None,
        "seriesuids": str(seriesuids_csv) if seriesuids_csv else None,
        "predictions": str(predictions_csv) if predictions_csv else None,
        "pipeline": _config_summary(pipeline_config) if not predictions_csv else None,
    }
    return metrics


def evaluate_detection_tables(
    scans: Sequence[str],
    annotations_by_scan: Mapping[str, np.ndarray],
    excluded_by_scan: Mapping[str, np.ndarray] | None = None,
    *,
    load_scan: Callable[[str], object] | None = None,
    predictions_by_scan: Mapping[str, np.ndarray] | None = None,
    pipeline_config=None,
    save_predictions_csv: str | os.PathLike | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
) -> dict:
    """Score in-memory tables by the LUNA16 protocol, running the pipeline on each scan when no predictions are given.

    Args:
        scans: the scan names evaluated (the FP divisor is their number).
        annotations_by_scan: scan -> (T, 4) reference nodules ``[x, y, z, diameter_mm]`` (LPS mm).
        excluded_by_scan: scan -> (E, 4) excluded findings (diameter -1 = unknown), or None.
        load_scan: scan -> :class:`lunglesionai.core.volume.Volume`, called once per scan (one in memory at a
            time) when ``predictions_by_scan`` is None.
        predictions_by_scan: scan -> (N, 4) ``[x, y, z, score]`` (LPS mm); the pipeline is not run.
        pipeline_config: :class:`lunglesionai.pipeline.PipelineConfig` (default settings when None).
        save_predictions_csv: also write the predictions used, in the LUNA16 submission format, to this file.
        n_bootstrap: bootstrap resamples for the 95 % CIs (0: none).

    Returns:
        The :func:`froc_luna16` dict plus ``timings_s``, ``median_scan_s`` and ``per_scan`` (no ``inputs``).

    Raises:
        ValueError: no reference nodule among ``scans``, or neither ``load_scan`` nor ``predictions_by_scan``.

    Example:
        >>> m = evaluate_detection_tables(["a"], {"a": np.array([[0, 0, 0, 8.0]])},
        ...                               predictions_by_scan={"a": np.array([[1, 0, 0, 0.9]])}, n_bootstrap=0)
        >>> m["cpm"], m["per_scan"]["a"]["n_hit"]
        (1.0, 1)
    """
    excluded = dict(excluded_by_scan or {})
    annotations = {s: annotations_by_scan[s] for s in scans if s in annotations_by_scan}
    if not sum(len(np.reshape(a, (-1, 4))) for a in annotations.values()):
        raise ValueError(f"no reference nodule in the {len(scans)} scan(s) evaluated: FROC needs at least one")
    timings: dict[str, float] = {}
    if predictions_by_scan is not None:
        predictions = {s: predictions_by_scan[s] for s in scans if s in predictions_by_scan}
    elif load_scan is None:
        raise ValueError("nothing to score: give predictions or a scan loader to run the pipeline")
    else:
        predictions, timings = _predict_scans(load_scan, scans, pipeline_config)
    if save_predictions_csv:
        rows = [(s, *p) for s, table in predictions.items() for p in np.reshape(table, (-1, 4)).tolist()]
        write_luna16_csv(save_predictions_csv, rows, PREDICTION_COLUMNS)
    metrics = froc_luna16(predictions, annotations, excluded, len(scans), n_bootstrap=n_bootstrap)
    metrics["timings_s"] = {s: round(t, 3) for s, t in timings.items()}
    metrics["median_scan_s"] = round(float(np.median(list(timings.values()))), 3) if timings else None
    metrics["per_scan"] = _per_scan(scans, predictions, annotations, excluded)
    return metrics


def evaluate_detection_lidc(
    images_dir: str | os.PathLike,
    *,
    min_readers: int = 1,
    pipeline_config=None,
    save_predictions_csv: str | os.PathLike | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
) -> dict:
    """LUNA16 protocol on LIDC-IDRI scans as distributed: one folder per scan, a DICOM series and its reader XML.

    Each scan's marks are read with :func:`lunglesionai.datasets.lidc_xml.read_lidc_scan` and turned into LUNA16
    tables by :func:`lunglesionai.datasets.lidc_xml.luna16_rows`: nodules marked by >= ``min_readers`` readers are
    the reference (each counted once); nodules of fewer readers, nodules < 3 mm and non-nodules are excluded
    findings, whose hits are ignored (LUNA16's ``annotations_excluded.csv``). Scans are named by their folder.

    Args:
        images_dir: a scan folder, or a folder of scan folders (:func:`~lunglesionai.datasets.lidc_xml.find_lidc_scans`).
        min_readers: fewest readers of a reference nodule (LUNA16 used 3).
        pipeline_config: :class:`lunglesionai.pipeline.PipelineConfig` (default settings when None).
        save_predictions_csv: also write the predictions (seriesuid column = scan folder name) to this file.
        n_bootstrap: bootstrap resamples for the 95 % CIs (0: none).

    Returns:
        The :func:`evaluate_detection_tables` dict plus ``inputs`` (images, lidc_xml, min_readers, series_uids).

    Raises:
        FileNotFoundError: no scan folder.
        lunglesionai.datasets.lidc_xml.LidcXmlError: an XML is malformed or does not fit its series.
        ValueError: ``min_readers`` < 1, or no nodule of >= ``min_readers`` readers in any scan (all before the
            pipeline runs).

    Example:
        >>> m = evaluate_detection_lidc("../shared/data/lidc_slabs", min_readers=1)  # doctest: +SKIP
    """
    from lunglesionai.datasets.lidc_xml import find_lidc_scans, luna16_rows, read_lidc_scan

    if min_readers < 1:
        raise ValueError(f"--min-readers must be >= 1, got {min_readers}")
    lidc = {folder.name: read_lidc_scan(folder) for folder in find_lidc_scans(images_dir)}
    annotations, excluded = {}, {}
    for name, scan in lidc.items():
        kept, ignored = luna16_rows(scan, min_readers, seriesuid=name)
        annotations[name] = np.asarray([r[1:] for r in kept], dtype=float).reshape(-1, 4)
        excluded[name] = np.asarray([r[1:] for r in ignored], dtype=float).reshape(-1, 4)
    if not sum(len(a) for a in annotations.values()):
        raise ValueError(f"{images_dir}: no nodule marked by >= {min_readers} reader(s) in its {len(lidc)} LIDC "
                         "scan(s): FROC needs at least one")
    metrics = evaluate_detection_tables(
        list(lidc), annotations, excluded, load_scan=lambda name: lidc[name].load_volume(),
        pipeline_config=pipeline_config, save_predictions_csv=save_predictions_csv, n_bootstrap=n_bootstrap,
    )
    metrics["inputs"] = {
        "images": str(images_dir),
        "lidc_xml": True,
        "min_readers": int(min_readers),
        "series_uids": {name: scan.series_uid for name, scan in lidc.items()},
        "xml": {name: scan.xml_path.name for name, scan in lidc.items()},
        "pipeline": _config_summary(pipeline_config),
    }
    return metrics


def _image_loader(images_dir, scans: Sequence[str]) -> Callable[[str], object]:
    """scan -> Volume reading ``<seriesuid>.*`` under ``images_dir``; every image is looked up before any work."""
    from lunglesionai.io.ct_files import load_volume

    if images_dir is None:
        raise FileNotFoundError("no images folder given and no predictions CSV: nothing to evaluate")
    images = find_images(images_dir, scans)
    missing = [s for s in scans if s not in images]
    if missing:
        raise FileNotFoundError(
            f"{images_dir}: no image for {len(missing)} of {len(scans)} scan(s), e.g. {missing[:3]} "
            f"(looked for <seriesuid>.mhd/.mha/.nii.gz/.nii/.nrrd, also under subset*/)"
        )
    return lambda scan: load_volume(images[scan])


def _predict_scans(load_scan: Callable[[str], object], scans: Sequence[str],
                   pipeline_config) -> tuple[dict[str, np.ndarray], dict]:
    """Analyse each scan with the pipeline: (predictions by scan, seconds by scan)."""
    from lunglesionai.pipeline import PipelineConfig, analyze_volume

    config = pipeline_config if pipeline_config is not None else PipelineConfig()
    predictions, timings = {}, {}
    for i, scan in enumerate(scans, start=1):
        logger.info("case %d/%d: %s", i, len(scans), scan)
        start = time.perf_counter()  # reading the scan included, as before
        report = analyze_volume(load_scan(scan), config)
        timings[scan] = time.perf_counter() - start
        rows = [[*f.center_lps_mm, f.detection_score or 0.0] for f in report.findings if f.kind in _LUNG_KINDS]
        predictions[scan] = np.asarray(rows, dtype=float).reshape(-1, 4)
    return predictions, timings


def _per_scan(scans, predictions, annotations, excluded) -> dict:
    """seriesuid -> {n_nodules, n_hit, n_predictions, n_false_positives}, by :func:`match_scan`."""
    empty = np.zeros((0, 4))
    out = {}
    for scan in scans:
        m = match_scan(predictions.get(scan, empty), annotations.get(scan, empty), excluded.get(scan))
        out[scan] = {
            "n_nodules": int(m.nodule_scores.size),
            "n_hit": int(np.isfinite(m.nodule_scores).sum()),
            "n_predictions": len(predictions.get(scan, empty)),
            "n_false_positives": int(m.fp_scores.size),
        }
    return out


def _config_summary(config) -> dict:
    """The pipeline settings used (a dict for the metrics JSON; defaults when ``config`` is None)."""
    from dataclasses import asdict, is_dataclass

    if config is None:
        from lunglesionai.pipeline import PipelineConfig

        config = PipelineConfig()
    return asdict(config) if is_dataclass(config) else {"repr": repr(config)}


def _rate_key(rate: float) -> str:
    """JSON key of an FP rate: 0.125 -> "0.125", 1.0 -> "1"."""
    return f"{rate:g}"


def _as_table(array, name: str) -> np.ndarray:
    """(n, 4) float array (``[x, y, z, score or diameter]``, LPS mm); empty -> (0, 4). Raises ValueError otherwise."""
    return finite_rows(array, name, 4, "[x, y, z, value]")

