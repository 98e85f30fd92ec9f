"""Real false positives as a measurement: nodule findings per real scan at several operating points, each finding
checked against every radiologist mark where an LIDC reader XML gives them, and contact sheets to judge them by eye.

Protocol, per scan (a CT file or a DICOM series folder; with ``lidc_xml`` each folder's LIDC XML gives the marks):

1. the pipeline (:func:`lunglesionai.pipeline.analyze_volume`) runs **once**, at ``min_score`` 0; an operating
   point t keeps the nodule findings whose ``detection_score >= t`` and every mass finding (the pipeline reports
   masses whatever the operating point); both kinds count (:data:`LUNG_FINDING_KINDS`). Candidates below a run's
   threshold are not segmented and both runs segment the best ``max_candidates`` candidates in score order, so
   this is the set a run at t reports **up to duplicate merging** (a finding merged into a higher-scoring one
   is merged the same way at t; only the masks of merged findings can differ) **and masses** (a candidate below t
   whose nodule mask came out over 30 mm seeds a mass at min_score 0 that a run at t would not have);
2. **unmarked** findings (the rule of :data:`UNMARKED_RULE`): :func:`lunglesionai.evaluation.metrics.luna16_hits.
   match_luna16` with every reader-marked nodule >= 3 mm (any number of readers; consensus centre and equivalent
   diameter) as the reference and every nodule < 3 mm and non-nodule mark as an excluded finding (radius 5 mm, as
   LUNA16's unknown size): a finding is *unmarked* when that rule calls it a false positive (its centre strictly
   outside every nodule's radius and every point mark's 5 mm). So the unmarked count at ``--min-readers 1`` is the
   number of false positives ``evaluate detection --lidc-xml`` counts at the same operating point;
3. per operating point: findings per scan (mean over scans) and unmarked per scan (mean over scans with marks).

With ``uld`` the universal lesion detector runs too (at the lowest of ``uld_thresholds`` and its own operating
point) and its lesions are counted apart (``uld`` key): lesions per scan and per cm of z at each threshold, the
same way (a threshold applied afterwards keeps the lesions whose best box reaches it; a run at that threshold can
link and merge boxes slightly differently), unmarked where reader marks exist, and shown on the contact sheet
(grey frames without marks). Lesions at reported nodules or masses are not counted (the pipeline merges them).

Numbers are for the scans given and say nothing about sensitivity: use ``evaluate detection`` for that. The
LUNA16 rule is from Setio et al., Med Image Anal 42:1-13, 2017, doi:10.1016/j.media.2017.06.015; LIDC-IDRI from
Armato et al., Med Phys 38(2):915-931, 2011, doi:10.1118/1.3528204.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.datasets.lidc_xml import LidcScan, find_lidc_scans, read_lidc_scan
from lunglesionai.evaluation.metrics.luna16_hits import FALSE_POSITIVE, match_luna16

__all__ = [
    "CONTACT_FOV_MM",
    "DEFAULT_THRESHOLDS",
    "LESION_WINDOW_HU",
    "ULD_THRESHOLDS",
    "UNMARKED_RULE",
    "ScanSource",
    "contact_sheet_png",
    "default_min_score",
    "evaluate_false_positives",
    "find_scan_sources",
    "unmarked_findings",
]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = tuple(round(0.3 + 0.05 * n, 2) for n in range(13))
"""Operating points reported besides the default one: 0.30, 0.35, ..., 0.90."""
ULD_THRESHOLDS = tuple(round(0.5 + 0.05 * n, 2) for n in range(10))
"""ULD operating points reported besides the model's: 0.50, 0.55, ..., 0.95."""
CONTACT_FOV_MM = 48.0
"""Side of each finding's axial crop on the contact sheet, mm."""
LESION_WINDOW_HU = (-160.0, 240.0)
"""Soft-tissue window (W 400 / L 40) ULD lesions are shown in."""
_LUNG_WINDOW_HU = (-1350.0, 150.0)  # W 1500 / L -600: the window of the thumbnails
CT_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
"""Files of the images folder read as CT (:func:`lunglesionai.io.ct_files.load_volume`); others are skipped."""
LUNG_FINDING_KINDS = ("nodule", "mass")
"""Finding kinds counted as nodule findings: the lung pipeline's nodules and masses (ULD lesions apart, ``uld``)."""
UNMARKED_RULE = (
    "LUNA16 hit rule (match_luna16) with every reader-marked nodule >= 3 mm (any number of readers; consensus centre, "
    "equivalent diameter) as reference and every nodule < 3 mm and non-nodule as excluded (radius 5 mm): a finding "
    "is unmarked when that rule calls it a false positive"
)
"""The rule deciding whether a finding lies on a reader mark, written into the metrics JSON."""
_TILE_PX = 160
_LABEL_PX = 18
_COLUMNS = 6
_FRAME = {True: (40, 200, 70), False: (230, 40, 40), None: (150, 150, 150)}  # marked, unmarked, no marks


@dataclass(frozen=True)
class ScanSource:
    """One scan of the images folder.

    Attributes:
        name: the file or folder name (the ``scan`` key of the metrics).
        path: the CT file or DICOM folder.
        lidc: its reader marks (a DICOM folder with an LIDC XML, when asked for), else None.
    """

    name: str
    path: Path
    lidc: Optional[LidcScan] = None


def find_scan_sources(images_dir: str | os.PathLike, *, lidc_xml: bool = False) -> list[ScanSource]:
    """The scans of a folder: its CT files (:data:`CT_FILE_SUFFIXES`) and its sub-folders (DICOM series), by name.

    With ``lidc_xml`` each sub-folder holding an ``*.xml`` is read as an LIDC scan
    (:func:`lunglesionai.datasets.lidc_xml.read_lidc_scan`); a folder without one has no marks (a warning is
    logged). A folder that itself holds an XML is one LIDC scan.

    Raises:
        FileNotFoundError: ``images_dir`` is not a folder, or holds no scan.
        lunglesionai.datasets.lidc_xml.LidcXmlError: an XML is malformed or does not fit its series.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{images_dir}: not a folder")
    if lidc_xml and any(root.glob("*.xml")):
        folders, files = find_lidc_scans(root), []
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(CT_FILE_SUFFIXES))
    sources = [ScanSource(p.name, p) for p in files]
    for folder in folders:
        lidc = None
        if lidc_xml and any(folder.glob("*.xml")):
            lidc = read_lidc_scan(folder)
        elif lidc_xml:
            logger.warning("%s: no LIDC XML; its findings are counted but not checked against reader marks", folder)
        sources.append(ScanSource(folder.name, folder, lidc))
    if not sources:
        raise FileNotFoundError(f"{images_dir}: no CT file ({', '.join(CT_FILE_SUFFIXES)}) or DICOM folder in it")
    return sorted(sources, key=lambda s: s.name)


def default_min_score(config) -> float:
    """The operating point :func:`lunglesionai.pipeline.analyze_volume` applies for ``config``: its ``min_score``,
    else the FP-reduction model's (when ``config.fpr`` and the model is installed), else the learned detector's
    (``detector`` learned or combined, model installed), else 0 (the classical detector): the rule of
    :func:`lunglesionai.stages.nodule_detection.detect_nodules`.
    """
    from lunglesionai.nets.model_store import ModelFileError
    from lunglesionai.stages.nodule_detection import load_learned_model

    if config.min_score is not None:
        return float(config.min_score)
    wanted = (["fpr"] if config.fpr else []) + (["detector"] if config.detector != "classical" else [])
    for name in wanted:
        try:
            model = load_learned_model(name, getattr(config, f"{name}_model_dir"))
        except ModelFileError:
            continue
        return float(model.default_min_score)
    return 0.0


def unmarked_findings(centers_lps_mm: np.ndarray, scan: LidcScan) -> np.ndarray:
    """Which findings lie on no reader mark (:data:`UNMARKED_RULE`).

    Args:
        centers_lps_mm: (N, 3) finding centres, LPS mm.
        scan: the scan's reader marks.

    Returns:
        (N,) bool, True where the finding is unmarked.

    Raises:
        ValueError: ``centers_lps_mm`` is not (N, 3) finite.

    Example:
        >>> unmarked_findings(np.zeros((0, 3)), scan).shape  # doctest: +SKIP
        (0,)
    """
    centres = np.asarray(centers_lps_mm, dtype=float).reshape(-1, 3)
    nodules = scan.clusters
    points = (*scan.small_nodules, *scan.non_nodules)
    m = match_luna16(centres, np.ones(len(centres)), [n.center_lps_mm for n in nodules] or np.zeros((0, 3)),
                     [n.diameter_mm for n in nodules], [p.point_lps_mm for p in points] or np.zeros((0, 3)),
                     [-1.0] * len(points))
    return m.finding_truth == FALSE_POSITIVE


def evaluate_false_positives(
    images_dir: str | os.PathLike,
    *,
    lidc_xml: bool = False,
    pipeline_config=None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    contact_sheet: str | os.PathLike | None = None,
    uld: bool = False,
    uld_thresholds: Sequence[float] = ULD_THRESHOLDS,
) -> dict:
    """Nodule findings per real scan at several operating points, unmarked ones where reader marks exist.

    Args:
        images_dir: folder of CT files and/or DICOM series folders (:func:`find_scan_sources`).
        lidc_xml: read each folder's LIDC XML for the reader marks.
        pipeline_config: :class:`lunglesionai.pipeline.PipelineConfig`; its ``min_score`` (None: the models'
            default, :func:`default_min_score`) is the default operating point; the pipeline runs at 0.
        thresholds: further operating points (scores in [0, 1]).
        contact_sheet: a ``.png`` file (one scan only) or a folder (created; ``<scan>.png`` per scan): the
            findings at the default operating point as axial crops (:func:`contact_sheet_png`); None: none.
        uld: also run universal lesion detection and count its lesions (module docstring; ``uld`` key).
        uld_thresholds: ULD operating points reported besides the model's (or ``pipeline_config.uld_min_score``).

    Returns:
        JSON-ready dict: ``n_scans``, ``min_score`` (the default operating point), ``findings_per_scan`` and
        ``unmarked_per_scan`` (means there; the latter over scans with marks, None without any), ``per_scan``
        ([{"scan", "findings", "unmarked", "reader_nodules", "reader_nodules_found"}]; None where the scan has no
        marks), ``operating_points`` ([{"min_score", "findings_per_scan", "unmarked_per_scan", "per_scan"}]),
        ``findings`` (every finding of the min-score-0 run: scan, id, center_lps_mm, score, diameter_mm, unmarked),
        ``unmarked_rule``, ``timings_s``, ``pipeline``, ``note``; with ``uld`` also ``uld``: ``{"min_score",
        "lesions_per_scan", "per_scan": [{"scan", "lesions", "unmarked", "z_extent_cm", "lesions_per_cm"}],
        "operating_points": [{"min_score", "lesions_per_scan", "per_scan"}], "lesions": [rows]}``.

    Raises:
        FileNotFoundError: no scan in ``images_dir``.
        ValueError: a threshold outside [0, 1]; a ``.png`` contact sheet for several scans; an unreadable CT or
            XML (CTInputError, LidcXmlError); all before the first analysis except unreadable CTs.

    Example:
        >>> m = evaluate_false_positives("../shared/data/lidc_slabs", lidc_xml=True)  # doctest: +SKIP
        >>> m["findings_per_scan"], [s["unmarked"] for s in m["per_scan"]]  # doctest: +SKIP
    """
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.pipeline import PipelineConfig, analyze_volume

    config = pipeline_config if pipeline_config is not None else PipelineConfig()
    if any(not 0.0 <= float(t) <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must lie within [0, 1], got {list(thresholds)}")
    sources = find_scan_sources(images_dir, lidc_xml=lidc_xml)
    sheet_paths = _contact_sheet_paths(contact_sheet, sources)
    default = default_min_score(config)
    uld_default = _uld_default(config) if uld else None
    uld_points = sorted({round(float(t), 4) for t in uld_thresholds} | {round(uld_default, 4)}) if uld else []
    if any(not 0.0 <= t <= 1.0 for t in uld_points):
        raise ValueError(f"ULD thresholds must lie within [0, 1], got {list(uld_thresholds)}")
    run_config = replace(config, min_score=0.0, uld=uld, uld_min_score=min(uld_points) if uld else None)
    rows, lesion_rows, z_cm, timings, sheets = [], [], {}, {}, {}
    for i, source in enumerate(sources, start=1):
        logger.info("case %d/%d: %s", i, len(sources), source.name)
        start = time.perf_counter()
        volume = source.lidc.load_volume() if source.lidc else load_volume(source.path)
        report = analyze_volume(volume, run_config)
        timings[source.name] = round(time.perf_counter() - start, 3)
        nodules = [f for f in report.findings if f.kind in LUNG_FINDING_KINDS]
        unmarked = (unmarked_findings([f.center_lps_mm for f in nodules], source.lidc) if source.lidc
                    else [None] * len(nodules))
        rows += [_finding_row(source.name, f, u) for f, u in zip(nodules, unmarked)]
        lesions = [f for f in report.findings if f.kind == "lesion"]
        lesion_unmarked = (unmarked_findings([f.center_lps_mm for f in lesions], source.lidc) if source.lidc
                           else [None] * len(lesions))
        lesion_rows += [{**_finding_row(source.name, f, u), "lesion_type": f.extra.get("lesion_type"),
                         "box_size_mm": f.extra.get("box_size_mm")} for f, u in zip(lesions, lesion_unmarked)]
        z_cm[source.name] = round(volume.shape_zyx[0] * volume.spacing_mm[2] / 10.0, 2)
        if sheet_paths:
            shown = [(f, u) for f, u in zip(nodules, unmarked) if _shown(f.kind, f.detection_score, default)]
            shown += [(f, u) for f, u in zip(lesions, lesion_unmarked) if (f.detection_score or 0.0) >= uld_default]
            sheets[source.name] = contact_sheet_png(volume, shown, f"{source.name}: {len(shown)} finding(s), "
                                                                  f"score >= {default:.2f}")
    for name, png in sheets.items():  # only once every scan was analysed
        sheet_paths[name].parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(sheet_paths[name], lambda tmp, data=png: tmp.write_bytes(data))
    points = sorted({round(float(t), 4) for t in thresholds} | {round(default, 4)})
    at_default = _operating_point(sources, rows, default)
    extra = {"uld": _uld_summary(sources, lesion_rows, z_cm, uld_default, uld_points)} if uld else {}
    return {
        "n_scans": len(sources),
        "min_score": default,
        "findings_per_scan": at_default["findings_per_scan"],
        "unmarked_per_scan": at_default["unmarked_per_scan"],
        "per_scan": [{**entry, **_reader_nodules(source, rows, default)}
                     for source, entry in zip(sources, at_default["per_scan"])],
        "operating_points": [_operating_point(sources, rows, t) for t in points],
        "findings": rows,
        "unmarked_rule": UNMARKED_RULE,
        "timings_s": timings,
        "pipeline": {**asdict(config), "min_score": default},
        "note": "one pipeline run per scan at min_score 0; an operating point keeps the findings with score >= it "
                "(the set a run at that point reports, up to duplicate merging)",
        **extra,
    }


def _uld_default(config) -> float:
    """The ULD operating point of ``config``: its ``uld_min_score``, else the installed model's."""
    from lunglesionai.stages.nodule_detection import load_learned_model

    if config.uld_min_score is not None:
        return float(config.uld_min_score)
    return float(load_learned_model("uld", config.uld_model_dir).settings().min_score)


def _uld_summary(sources: list, rows: list, z_cm: dict, default: float, points: list) -> dict:
    """Lesions per scan (and per cm of z) at the ULD operating point and at each threshold."""

    def at(threshold: float) -> dict:
        per_scan = []
        for source in sources:
            kept = [r for r in rows if r["scan"] == source.name and r["score"] >= threshold]
            per_scan.append({"scan": source.name, "lesions": len(kept),
                             "unmarked": sum(r["unmarked"] for r in kept) if source.lidc else None,
                             "z_extent_cm": z_cm[source.name],
                             "lesions_per_cm": round(len(kept) / z_cm[source.name], 3) if z_cm[source.name] else None})
        return {"min_score": threshold, "lesions_per_scan": float(np.mean([s["lesions"] for s in per_scan])),
                "per_scan": per_scan}

    current = at(default)
    return {"min_score": default, "lesions_per_scan": current["lesions_per_scan"], "per_scan": current["per_scan"],
            "operating_points": [at(t) for t in points], "lesions": rows}


def _shown(kind: str, score: Optional[float], threshold: float) -> bool:
    """Whether a finding is reported at an operating point: masses always (they bypass it), nodules at score >= it."""
    return kind == "mass" or (score or 0.0) >= threshold


def _finding_row(scan: str, finding, unmarked) -> dict:
    return {"scan": scan, "id": finding.id, "kind": finding.kind, "center_lps_mm": [round(float(c), 2) for c in finding.center_lps_mm],
            "score": float(finding.detection_score or 0.0),
            "diameter_mm": None if finding.diameter_mm is None else round(float(finding.diameter_mm), 2),
            "unmarked": None if unmarked is None else bool(unmarked)}


def _operating_point(sources: list, rows: list, threshold: float) -> dict:
    per_scan = []
    for source in sources:
        kept = [r for r in rows if r["scan"] == source.name and _shown(r["kind"], r["score"], threshold)]
        per_scan.append({"scan": source.name, "findings": len(kept),
                         "unmarked": sum(r["unmarked"] for r in kept) if source.lidc else None})
    marked = [s["unmarked"] for s in per_scan if s["unmarked"] is not None]
    return {"min_score": threshold, "findings_per_scan": float(np.mean([s["findings"] for s in per_scan])),
            "unmarked_per_scan": float(np.mean(marked)) if marked else None, "per_scan": per_scan}


def _reader_nodules(source: ScanSource, rows: list, threshold: float) -> dict:
    """Reader-marked nodules >= 3 mm of the scan and how many a finding at ``threshold`` hits (LUNA16 rule)."""
    if source.lidc is None:
        return {"reader_nodules": None, "reader_nodules_found": None}
    nodules = source.lidc.clusters
    kept = [r["center_lps_mm"] for r in rows if r["scan"] == source.name and _shown(r["kind"], r["score"], threshold)]
    m = match_luna16(kept or np.zeros((0, 3)), np.ones(len(kept)), [n.center_lps_mm for n in nodules] or
                     np.zeros((0, 3)), [n.diameter_mm for n in nodules])
    return {"reader_nodules": len(nodules), "reader_nodules_found": m.true_positives,
            "reader_nodules_readers": [n.n_readers for n in nodules]}


def _contact_sheet_paths(target, sources: list) -> dict:
    """scan name -> PNG path, checked before any analysis (a missing folder is created when writing)."""
    from lunglesionai.core.output_folder import check_output_file

    if target is None:
        return {}
    target = Path(target)
    if target.suffix.lower() == ".png":
        if len(sources) != 1:
            raise ValueError(f"--contact-sheet {target}: a .png file holds one scan, but there are {len(sources)}; "
                             "give a folder")
        return {sources[0].name: check_output_file(target)}
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"--contact-sheet {target}: is a file; give a folder or a .png name")
    return {s.name: check_output_file(target / f"{s.name}.png") for s in sources}


def _lesion_view(volume_lps, finding):
    """(volume crop in a soft-tissue window, its box outline mask, centre kji in the crop, half FOV mm) of a ULD
    lesion: the crop's HU are mapped so that the thumbnails' lung window shows W 400 / L 40 (:data:`LESION_WINDOW_HU`),
    the field of view is the larger of :data:`CONTACT_FOV_MM` and 1.5 times the box, and the outline is its box."""
    from lunglesionai.core.findings import FindingMask
    from lunglesionai.core.volume import Volume

    lo_lps, hi_lps = np.min(finding.bbox_lps_mm, axis=0), np.max(finding.bbox_lps_mm, axis=0)
    half_fov = max(CONTACT_FOV_MM, 1.5 * float(max(hi_lps[:2] - lo_lps[:2]))) / 2
    spacing = np.asarray(volume_lps.spacing_mm[::-1], float)
    centre = np.round(volume_lps.lps_to_kji([finding.center_lps_mm])[0]).astype(int)
    half = np.ceil(half_fov / spacing).astype(int) + 1
    lo = np.clip(centre - half, 0, np.asarray(volume_lps.shape_zyx) - 1)
    hi = np.clip(centre + half + 1, lo + 1, volume_lps.shape_zyx)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    low, high = LESION_WINDOW_HU
    hu = (np.asarray(volume_lps.hu[crop], np.float32) - low) * (_LUNG_WINDOW_HU[1] - _LUNG_WINDOW_HU[0]) / (high - low)
    shown = Volume(hu + _LUNG_WINDOW_HU[0], volume_lps.spacing_mm, tuple(volume_lps.kji_to_lps(lo[None])[0]),
                   volume_lps.direction, volume_lps.source)
    box_lo = np.floor(shown.lps_to_kji(lo_lps[None])[0]).astype(int)
    box_hi = np.ceil(shown.lps_to_kji(hi_lps[None])[0]).astype(int)
    box_lo, box_hi = np.minimum(box_lo, box_hi), np.maximum(box_lo, box_hi) + 1
    return shown, FindingMask(tuple(int(v) for v in box_lo), np.ones(box_hi - box_lo, bool)), centre - lo, half_fov


def contact_sheet_png(volume, findings: Sequence, title: str, *, columns: int = _COLUMNS) -> bytes:
    """A grid of the findings' axial crops (lung window W 1500 / L -600, :data:`CONTACT_FOV_MM` wide, outline in the
    finding's mask; ULD lesions in a soft-tissue window with their box as outline, :func:`_lesion_view`) with
    "id score diameter" under each; frames: green on a reader mark, red unmarked, grey without marks.

    Args:
        volume: the CT (:class:`lunglesionai.core.volume.Volume`, ``hu`` (Z, Y, X), any orientation; shown in LPS
            radiological display: patient's right on the image's left, anterior up).
        findings: (Finding, unmarked: bool or None) pairs; the finding's ``mask`` is on ``volume``'s grid.
        title: the line above the grid.
        columns: crops per row.

    Returns:
        PNG bytes (RGB).
    """
    from PIL import Image, ImageDraw

    from lunglesionai.core.orientation import reorient_to_lps
    from lunglesionai.io.report_html import finding_thumbnails

    volume_lps, permutation = reorient_to_lps(volume)
    tiles = []
    for finding, unmarked in findings:
        if finding.kind == "lesion":
            shown, mask, centre, half_fov = _lesion_view(volume_lps, finding)
        else:
            shown, half_fov = volume_lps, CONTACT_FOV_MM / 2
            mask = finding.mask.reoriented(permutation) if finding.mask is not None else None
            centre = volume_lps.lps_to_kji([finding.center_lps_mm])[0]
        axial = finding_thumbnails(shown, mask, centre, half_fov, (1.0, 0.85, 0.0), _TILE_PX).axial
        tile = Image.new("RGB", (_TILE_PX + 8, _TILE_PX + 8 + _LABEL_PX), _FRAME[None if unmarked is None
                                                                                  else not unmarked])
        crop = Image.open(io.BytesIO(axial)).convert("RGB")
        tile.paste(crop, (4 + (_TILE_PX - crop.width) // 2, 4 + (_TILE_PX - crop.height) // 2))
        diameter = f" {finding.diameter_mm:.0f}mm" if finding.diameter_mm is not None else ""
        ImageDraw.Draw(tile).text((4, _TILE_PX + 9), f"{finding.id} {finding.detection_score or 0:.2f}{diameter}",
                                  fill=(0, 0, 0))
        tiles.append(tile)
    n_rows = max(1, -(-len(tiles) // columns))
    width = max(columns * (_TILE_PX + 8), 480)
    sheet = Image.new("RGB", (width, 40 + n_rows * (_TILE_PX + 8 + _LABEL_PX)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0))
    draw.text((4, 20), "frame: green = on a reader mark, red = unmarked, grey = no reader marks; "
                       f"{CONTACT_FOV_MM:.0f} mm axial crops", fill=(60, 60, 60))
    if not tiles:
        draw.text((4, 48), "no findings", fill=(0, 0, 0))
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % columns) * (_TILE_PX + 8), 40 + (n // columns) * (_TILE_PX + 8 + _LABEL_PX)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
