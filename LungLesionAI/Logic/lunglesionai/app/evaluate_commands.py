"""``lunglesionai evaluate detection | false-positives | lidc-voi | uld``: argument parsers and runners.

Each ``run_*`` parses nothing itself: it takes the parsed arguments, calls one protocol of
:mod:`lunglesionai.evaluation`, prints a summary and writes the metrics JSON atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lunglesionai.core.output_folder import write_json_atomic
from lunglesionai.evaluation.deeplesion_protocol import evaluate_deeplesion
from lunglesionai.evaluation.lidc_voi_protocol import SUMMARY_KEYS, evaluate_lidc_voi
from lunglesionai.evaluation.luna16_protocol import DEFAULT_BOOTSTRAP, evaluate_detection, evaluate_detection_lidc

__all__ = ["add_evaluate_detection_parser", "run_evaluate_detection", "add_evaluate_false_positives_parser",
           "run_evaluate_false_positives", "add_evaluate_lidc_parser", "run_evaluate_lidc", "add_evaluate_uld_parser",
           "run_evaluate_uld"]


def add_evaluate_detection_parser(evaluate_subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate detection`` on the ``evaluate`` sub-command's sub-parsers (``set_defaults(func=...)``).

    Args:
        evaluate_subparsers: what ``parser.add_subparsers()`` returned for ``lunglesionai evaluate``.

    Returns:
        The new sub-parser.
    """
    from lunglesionai.app.arguments import add_detection_arguments

    p = evaluate_subparsers.add_parser(
        "detection", help="LUNA16 protocol: FROC at 1/8..8 FPs per scan and CPM on LUNA16-style data"
    )
    p.add_argument("--images", help="folder of <seriesuid>.{mhd,mha,nii.gz,nii,nrrd} (also subset*/); with "
                   "--lidc-xml a folder of LIDC scan folders (a DICOM series and its reader XML each)")
    p.add_argument("--annotations", help="annotations.csv: seriesuid,coordX,coordY,coordZ,diameter_mm (required "
                   "unless --lidc-xml)")
    p.add_argument("--lidc-xml", action="store_true", help="read the reference from each scan folder's LIDC XML: "
                   "nodules of >= --min-readers readers count once; hits on the other marks are ignored")
    p.add_argument("--min-readers", type=int, default=1, help="with --lidc-xml: fewest readers of a reference "
                   "nodule (default %(default)s; LUNA16 used 3)")
    p.add_argument("--excluded", help="annotations_excluded.csv: findings whose hits are ignored")
    p.add_argument("--seriesuids", help="seriesuids.csv: scans to evaluate (default: those in --annotations)")
    p.add_argument("--predictions", help="read predictions (seriesuid,coordX,coordY,coordZ,probability) instead of "
                   "running the pipeline")
    p.add_argument("--save-predictions", help="also write the pipeline's predictions to this CSV")
    add_detection_arguments(p, min_score_default=0.0)
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--out", required=True, help="write the metrics as JSON to this file")
    p.set_defaults(func=run_evaluate_detection)
    return p


def run_evaluate_detection(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate detection``: score, print a summary, write the metrics JSON atomically; returns 0.

    Raises:
        ValueError: neither ``--images`` nor ``--predictions`` given (and the errors of :func:`evaluate_detection`).
    """
    from lunglesionai.pipeline import PipelineConfig

    _check_detection_inputs(args)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    config = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr, device=args.device,
                            uld=False)
    if args.lidc_xml:
        metrics = evaluate_detection_lidc(args.images, min_readers=args.min_readers, pipeline_config=config,
                                          save_predictions_csv=args.save_predictions, n_bootstrap=args.bootstrap)
    else:
        metrics = evaluate_detection(
            args.images,
            args.annotations,
            args.excluded,
            config,
            args.predictions,
            seriesuids_csv=args.seriesuids,
            save_predictions_csv=args.save_predictions,
            n_bootstrap=args.bootstrap,
        )
    write_json_atomic(out, metrics, trailing_newline=False)
    froc = "  ".join(f"{k}: {v:.3f}" for k, v in metrics["froc"].items())
    print(f"{metrics['n_scans']} scans, {metrics['n_nodules']} nodules; sensitivity at FPs/scan {froc}")
    print(f"CPM {metrics['cpm']:.3f}" + (f" (95% CI {metrics['cpm_ci95'][0]:.3f}-{metrics['cpm_ci95'][1]:.3f})"
                                         if "cpm_ci95" in metrics else "") + f"; wrote {out}")
    return 0


def _check_detection_inputs(args: argparse.Namespace) -> None:
    """Refuse inconsistent ``evaluate detection`` options (ValueError, exit 2) before any work."""
    if args.lidc_xml:
        clash = [name for name, value in (("--annotations", args.annotations), ("--excluded", args.excluded),
                                           ("--seriesuids", args.seriesuids), ("--predictions", args.predictions))
                 if value]
        if clash:
            raise ValueError(f"evaluate detection --lidc-xml reads the reference from the XML files; drop {clash[0]}")
        if not args.images:
            raise ValueError("evaluate detection --lidc-xml needs --images (a folder of LIDC scan folders)")
        if args.min_readers < 1:
            raise ValueError(f"--min-readers must be >= 1, got {args.min_readers}")
        return
    if args.min_readers != 1:
        raise ValueError("--min-readers needs --lidc-xml")
    if not args.annotations:
        raise ValueError("evaluate detection needs --annotations (or --lidc-xml for LIDC scans with reader XML)")
    if not args.images and not args.predictions:
        raise ValueError("evaluate detection needs --images (to run the pipeline) or --predictions")


def add_evaluate_false_positives_parser(evaluate_subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate false-positives`` on what ``add_subparsers()`` returned for ``lunglesionai evaluate``.

    Returns:
        The new sub-parser.
    """
    from lunglesionai.app.arguments import add_detection_arguments

    p = evaluate_subparsers.add_parser(
        "false-positives", help="nodule findings per real scan at several operating points; with --lidc-xml those "
        "on no reader mark (unmarked)")
    p.add_argument("--images", required=True, help="folder of CT files (.nii.gz, .nrrd, .mha, ...) and/or DICOM "
                   "series folders")
    p.add_argument("--lidc-xml", action="store_true", help="read each DICOM folder's LIDC reader XML and count the "
                   "findings on no reader mark")
    p.add_argument("--out", required=True, help="write the metrics as JSON to this file")
    p.add_argument("--contact-sheet", help="a .png (one scan) or a folder (one <scan>.png each): the findings at the "
                   "operating point as axial crops, to judge them by eye")
    p.add_argument("--thresholds", type=float, nargs="+", default=None,
                   help="operating points reported besides the default (default 0.30 0.35 ... 0.90)")
    p.add_argument("--uld", action="store_true", help="also run universal lesion detection and count its lesions "
                   "per scan and per cm of z (uld key of the JSON; on the contact sheet too)")
    p.add_argument("--uld-min-score", type=float, default=None,
                   help="ULD operating point (default: the model's, models/uld/config.json)")
    add_detection_arguments(p)
    p.set_defaults(func=run_evaluate_false_positives)
    return p


def run_evaluate_false_positives(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate false-positives``: run, print findings per scan, write the JSON atomically; returns 0.

    Raises:
        The errors of :func:`lunglesionai.evaluation.false_positives.evaluate_false_positives`.
    """
    from lunglesionai.core.findings import to_jsonable
    from lunglesionai.evaluation.false_positives import DEFAULT_THRESHOLDS, evaluate_false_positives
    from lunglesionai.pipeline import PipelineConfig

    out = Path(args.out)
    config = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr, device=args.device,
                            uld=False, uld_min_score=args.uld_min_score)
    metrics = evaluate_false_positives(args.images, lidc_xml=args.lidc_xml, pipeline_config=config,
                                       thresholds=args.thresholds or DEFAULT_THRESHOLDS,
                                       contact_sheet=args.contact_sheet, uld=args.uld)
    write_json_atomic(out, to_jsonable(metrics, nan_as_none=True), trailing_newline=False)
    for scan in metrics["per_scan"]:
        marks = "" if scan["unmarked"] is None else (f", {scan['unmarked']} unmarked; reader nodules found "
                                                    f"{scan['reader_nodules_found']}/{scan['reader_nodules']}")
        print(f"{scan['scan']}: {scan['findings']} finding(s){marks}")
    unmarked = metrics["unmarked_per_scan"]
    print(f"{metrics['n_scans']} scan(s) at score >= {metrics['min_score']:.3f}: {metrics['findings_per_scan']:.2f} "
          f"findings per scan" + ("" if unmarked is None else f", {unmarked:.2f} unmarked per scan") + f"; wrote {out}")
    if "uld" in metrics:
        uld = metrics["uld"]
        print(f"ULD at score >= {uld['min_score']:.3f}: {uld['lesions_per_scan']:.2f} lesions per scan (" + ", ".join(
            f"{s['scan']}: {s['lesions']}" for s in uld["per_scan"]) + ")")
    return 0


def add_evaluate_lidc_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate lidc-voi --data DIR [--split val] --out metrics.json [--model DIR]``.

    ``subparsers`` is what ``add_subparsers()`` returned for ``lunglesionai evaluate``. The command's
    ``func(args)`` prints a summary, writes the JSON atomically and returns 0.

    Returns:
        The ``lidc-voi`` parser.
    """
    p = subparsers.add_parser("lidc-voi", help="Dice, malignancy AUC, texture / invasiveness F1 on LIDC-IDRI VOIs")
    p.add_argument("--data", required=True, help="folder with images/, masks/, nodules.csv")
    p.add_argument("--split", default="val", help="rows of this split (all rows when the table has none)")
    p.add_argument("--out", required=True, help="metrics JSON file to write")
    p.add_argument("--model", help="grader folder (default: models/grader or $LUNGLESIONAI_MODELS/grader)")
    p.add_argument("--no-classical", action="store_true", help="skip the classical segmentation baseline")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.set_defaults(func=run_evaluate_lidc)
    return p


def run_evaluate_lidc(args: argparse.Namespace) -> int:
    """``func`` of ``evaluate lidc-voi``; returns exit status 0."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    metrics = evaluate_lidc_voi(args.data, args.split, args.model, classical=not args.no_classical)
    out = Path(args.out)
    write_json_atomic(out, metrics)
    for key in SUMMARY_KEYS:
        value = metrics.get(key)
        print(f"{key:32s} {value:.4f}" if isinstance(value, float) else f"{key:32s} {value}")
    print(f"wrote {out}")
    return 0


def add_evaluate_uld_parser(evaluate_subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate uld`` on what ``add_subparsers()`` returned for ``lunglesionai evaluate``."""
    p = evaluate_subparsers.add_parser("uld", help="universal lesion detection on DeepLesion key slices "
                                       "(sensitivity at 0.5/1/2/4 FPs per image)")
    p.add_argument("--data", required=True, help="DeepLesion folder holding Images_png/")
    p.add_argument("--info", required=True, help="DL_info.csv")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--split", type=int, choices=[1, 2, 3], default=3,
                   help="Train_Val_Test split to score: 2 validation, 3 test (default %(default)s)")
    p.add_argument("--model", help="ULD model folder (default models/uld or $LUNGLESIONAI_MODELS/uld)")
    p.add_argument("--limit", type=int, help="score only the first N key images")
    p.add_argument("--mode", choices=["auto", "3d-context", "key-slice"], default="auto",
                   help="slab input: neighbouring slices as 3-D context, or the key slice replicated (key-slice-only "
                        "data); auto (default) uses context where the slices are stored; metrics.json says which ran")
    p.set_defaults(func=run_evaluate_uld)
    return p


def run_evaluate_uld(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate uld``: load the model, score the split, print and write metrics.json atomically."""
    from lunglesionai.core.findings import to_jsonable
    from lunglesionai.stages.universal_lesions.detector import UniversalLesionDetector

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    model = UniversalLesionDetector.load(args.model)
    metrics = evaluate_deeplesion(model, args.data, args.info, split=args.split, limit=args.limit, mode=args.mode)
    metrics["model"] = model.model_info()
    write_json_atomic(out, to_jsonable(metrics, nan_as_none=True))
    sens = ", ".join(f"{k} FP: {v:.3f}" for k, v in metrics["sensitivity_at_fp"].items())
    print(f"{metrics['n_images']} images, {metrics['n_lesions']} lesions ({metrics['mode']} input); sensitivity "
          f"{sens}; mean {metrics['mean_sensitivity']:.3f}")
    return 0
