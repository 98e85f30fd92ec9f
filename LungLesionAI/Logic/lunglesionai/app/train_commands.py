"""``lunglesionai train grader | detector | fpr | uld``: argument parsers and runners.

Each ``run_*`` turns the parsed arguments into the trainer's config and calls one trainer of
:mod:`lunglesionai.training`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from lunglesionai.app.arguments import parse_host
from lunglesionai.datagen.uld_cases import (
    DEFAULT_HOSTS,
    HOST_KINDS,
    build_cases,
    validation_config,
)
from lunglesionai.nets.model_store import CONFIG_FILE, save_model
from lunglesionai.nets.retina_unet import CLASSIFICATION_LOSSES
from lunglesionai.stages.fp_reduction import DEFAULT_GRID_SPACING_MM
from lunglesionai.stages.grading import WEIGHTS_FILE as GRADER_WEIGHTS_FILE
from lunglesionai.stages.universal_lesions.detector import ULD_FORMAT
from lunglesionai.stages.universal_lesions.detector import WEIGHTS_FILE as ULD_WEIGHTS_FILE
from lunglesionai.training.detector import (
    DetectorTrainConfig,
    initial_weights,
    luna16_cases,
    train_detector,
    training_cases,
)
from lunglesionai.training.fp_reduction import (
    FprTrainConfig,
    classical_proposer,
    combined_proposer,
    learned_proposer,
    mine_candidates,
    train_fpr,
)
from lunglesionai.training.grader import GraderTrainingConfig, train_grader
from lunglesionai.training.universal_lesions import OPERATING_FP_RATE, ULDTrainConfig, train_uld

logger = logging.getLogger(__name__)

__all__ = ["add_train_detector_parser", "add_composite_arguments", "run_train_detector", "add_train_fpr_parser", "run_train_fpr", "add_train_grader_parser", "run_train_grader", "add_train_uld_parser", "run_train_uld"]


def add_train_detector_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train detector`` on what ``add_subparsers()`` returned for ``lunglesionai train``."""
    d = DetectorTrainConfig()
    p = subparsers.add_parser("detector", help="train the RetinaNet nodule detector on composites (LIDC train "
                              "nodules in real and phantom lungs)")
    add_composite_arguments(p, lidc_required=False)
    p.add_argument("--luna16-images", help="also train on LUNA16 scans (subsetN/<seriesuid>.mhd) ...")
    p.add_argument("--luna16-annotations", help="... with this annotations.csv")
    p.add_argument("--luna16-seriesuids", help="... only the scans listed here (e.g. the training subsets)")
    p.add_argument("--out", required=True, help="model folder to write (detector.pt, config.json)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--segmentation-weight", type=float, default=d.segmentation_weight,
                   help="weight of the Retina U-Net segmentation loss, 0 = plain RetinaNet (default %(default)s)")
    p.add_argument("--classification-loss", choices=CLASSIFICATION_LOSSES, default=d.classification_loss,
                   help="bce (MONAI's LUNA16 recipe) or focal (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also write the model every N steps (default: only at the end)")
    p.add_argument("--spacing", type=float, default=d.network.spacing_mm,
                   help="isotropic grid spacing the detector learns and runs on, mm (default %(default)s)")
    p.add_argument("--init", metavar="DIR", help="start from the weights of this trained detector (same "
                   "architecture; another --spacing is allowed): fine-tuning")
    p.add_argument("--host", action="append", type=parse_host, metavar="NAME=PATH",
                   help="also train on composites in this host CT (a real CT file or DICOM folder, or phantom:SEED), "
                   "each at its own grid and scanner-augmented (lunglesionai.training.detector_hosts); repeat")
    p.add_argument("--cases-per-host", type=int, default=20, help="composites per --host (default %(default)s)")
    p.set_defaults(func=run_train_detector)
    return p


def add_composite_arguments(parser: argparse.ArgumentParser, lidc_required: bool) -> None:
    """The training-composite options shared by ``train detector`` and ``train fpr``: ``--lidc``, ``--real-ct``,
    ``--n-real``, ``--n-phantom``, ``--seed``, ``--threads``, ``--cache-dir``."""
    d = DetectorTrainConfig()
    parser.add_argument("--lidc", required=lidc_required, help="lidc_voi folder (only its train split is used)")
    parser.add_argument("--real-ct", help="real chest CT used as a host (needed unless --n-real 0)")
    parser.add_argument("--n-real", type=int, default=d.n_real, help="composites on the real CT (default %(default)s)")
    parser.add_argument("--n-phantom", type=int, default=d.n_phantom,
                        help="composites on phantoms (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default %(default)s)")
    parser.add_argument("--cache-dir", help="keep the resampled composites here between runs (shared by train "
                        "detector and train fpr)")


def run_train_detector(args: argparse.Namespace) -> int:
    """``lunglesionai train detector``: build the composites, train, write the model; prints a summary."""
    from dataclasses import replace

    base = DetectorTrainConfig()
    config = DetectorTrainConfig(steps=args.steps, lr=args.lr, n_real=args.n_real, n_phantom=args.n_phantom,
                                 seed=args.seed, threads=args.threads, segmentation_weight=args.segmentation_weight,
                                 classification_loss=args.classification_loss, checkpoint_every=args.checkpoint_every,
                                 init_from=args.init, network=replace(base.network, spacing_mm=args.spacing))
    if args.init:
        initial_weights(args.init, config.network)  # fail before the composites are built
    if args.host and not args.lidc:
        raise ValueError("--host needs --lidc (the nodules pasted into the hosts)")
    if not args.lidc and not args.luna16_images:
        raise ValueError("train detector needs --lidc (composites) and/or --luna16-images with --luna16-annotations")
    if bool(args.luna16_images) != bool(args.luna16_annotations):
        raise ValueError("--luna16-images and --luna16-annotations go together")
    start = time.monotonic()
    cases = training_cases(args.lidc, args.real_ct, config, args.cache_dir) \
        if args.lidc and (config.n_real or config.n_phantom) else []
    if args.host:
        from lunglesionai.training.detector_hosts import hosts_training_cases

        cases += hosts_training_cases(args.host, args.lidc, args.cases_per_host, config.network.spacing_mm,
                                      cache_dir=args.cache_dir, seed=args.seed,
                                      nodules_per_case=config.nodules_per_case)
    if args.luna16_images:
        from lunglesionai.datasets.luna16 import read_seriesuids

        uids = read_seriesuids(args.luna16_seriesuids) if args.luna16_seriesuids else None
        cases += luna16_cases(args.luna16_images, args.luna16_annotations, config.network.spacing_mm, uids)
    logger.info("%d training composites in %.0f s", len(cases), time.monotonic() - start)
    result = train_detector(cases, args.out, config, hosts=dict(args.host) if args.host else None)
    summary = {"out": str(result.out_dir), "sha256": result.sha256, "train_seconds": round(result.seconds, 1),
               "data_seconds": round(time.monotonic() - start - result.seconds, 1), "final_loss": result.final_loss,
               "cases": result.n_cases, "boxes": result.n_boxes}
    print(json.dumps(summary, indent=1))
    return 0


def add_train_fpr_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train fpr`` on what ``add_subparsers()`` returned for ``lunglesionai train``."""

    p = subparsers.add_parser("fpr", help="train the false-positive-reduction classifier on the detector's "
                              "candidates in training composites")
    p.add_argument("--candidates", choices=["classical", "learned", "combined"], default="classical",
                   help="detector whose candidates are mined; combined = both (default %(default)s)")
    p.add_argument("--detector", help="trained detector folder (with --candidates learned or combined)")
    add_composite_arguments(p, lidc_required=True)
    p.add_argument("--out", required=True, help="model folder to write (fpr.pt, config.json)")
    p.add_argument("--steps", type=int, default=FprTrainConfig.steps, help="optimiser steps (default %(default)s)")
    p.set_defaults(func=run_train_fpr)
    return p


def run_train_fpr(args: argparse.Namespace) -> int:
    """``lunglesionai train fpr``: mine the detector's candidates on the training composites, train, write."""
    from lunglesionai.stages.retina_detector import LearnedDetector
    from lunglesionai.training.detector import DetectorTrainConfig, training_cases

    torch.set_num_threads(args.threads)
    start = time.monotonic()
    base = DetectorTrainConfig()
    composites = DetectorTrainConfig(n_real=args.n_real, n_phantom=args.n_phantom, seed=args.seed,
                                     network=replace(base.network, spacing_mm=DEFAULT_GRID_SPACING_MM))
    if args.candidates in ("learned", "combined"):
        if not args.detector:
            raise ValueError(f"--candidates {args.candidates} needs --detector DIR")
        detector = LearnedDetector.load(args.detector)
        propose = learned_proposer(detector, composites.network.spacing_mm)
        source = {"candidates": args.candidates, "detector_sha256": detector.sha256}
        if args.candidates == "combined":
            propose = combined_proposer(propose, classical_proposer(composites.network.spacing_mm))
    else:
        propose = classical_proposer(composites.network.spacing_mm)
        source = {"candidates": "classical multi-scale blob detector"}
    cases = training_cases(args.lidc, args.real_ct, composites, args.cache_dir)
    config = FprTrainConfig(steps=args.steps, seed=args.seed, threads=args.threads)
    crops, labels = mine_candidates(propose, cases, config.network, seed=args.seed)
    logger.info("mined %d positive / %d negative crops from %d cases in %.0f s", int(labels.sum()),
                int((labels == 0).sum()), len(cases), time.monotonic() - start)
    result = train_fpr(crops, labels, args.out, config,
                       extra={**source, "grid_spacing_mm": composites.network.spacing_mm,
                              "data": "candidates on composites of LIDC-IDRI train-split nodules in the real chest "
                                      "CT and phantom lungs"})
    print(json.dumps(asdict(result), indent=1))
    return 0


def add_train_grader_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train grader --data DIR --out DIR [--epochs N] [--seed S] ...`` under ``subparsers``.

    ``subparsers`` is what ``add_subparsers()`` returned for ``lunglesionai train``. The command's ``func(args)``
    trains, prints the val metrics and returns exit status 0.

    Returns:
        The ``grader`` parser.
    """
    p = subparsers.add_parser("grader", help="train the DenseSharp nodule grader on LIDC-IDRI VOIs (lidc_voi layout)")
    p.add_argument("--data", required=True, help="folder with images/, masks/, nodules.csv")
    p.add_argument("--out", default="models/grader", help="output folder (default models/grader)")
    p.add_argument("--epochs", type=int, default=GraderTrainingConfig.epochs, help="epochs (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--max-minutes", type=float, default=GraderTrainingConfig.max_minutes,
                   help="wall-time budget; no new epoch starts after it (default %(default)s)")
    p.add_argument("--cache-dir", help="folder for the cropped-VOI cache (.npz)")
    p.add_argument("--init-from", help="fine-tune from this grader folder (e.g. models/grader): backbone and old heads "
                   "start from its weights, new LIDC attribute heads from the training split's rating frequencies")
    p.add_argument("--pretrained-lr-factor", type=float, default=GraderTrainingConfig.pretrained_lr_factor,
                   help="learning-rate factor of the parts taken from --init-from; 0 freezes them (default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=GraderTrainingConfig.learning_rate,
                   help="AdamW learning rate (default %(default)s)")
    p.set_defaults(func=run_train_grader)
    return p


def run_train_grader(args: argparse.Namespace) -> int:
    """``func`` of ``train grader``: build the config from ``args``, train, print the summary; returns 0."""
    config = GraderTrainingConfig(
        data_dir=str(args.data),
        out_dir=str(args.out),
        epochs=args.epochs,
        seed=args.seed,
        num_threads=args.threads,
        max_minutes=args.max_minutes,
        cache_dir=args.cache_dir,
        init_from=args.init_from,
        pretrained_lr_factor=args.pretrained_lr_factor,
        learning_rate=args.learning_rate,
    )
    result = train_grader(config)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.val_metrics.items()}
    print(f"best epoch {result.best_epoch}/{result.epochs_run}, {result.seconds / 60:.1f} min, "
          f"temperature {result.temperature:.3f}; val: {json.dumps(shown)}")
    print(f"wrote {result.out_dir / GRADER_WEIGHTS_FILE} and {result.out_dir / CONFIG_FILE}")
    return 0


def add_train_uld_parser(train_subparsers) -> argparse.ArgumentParser:
    """Register ``train uld`` on what ``add_subparsers()`` returned for ``lunglesionai train``."""
    d = ULDTrainConfig()
    p = train_subparsers.add_parser("uld", help="train the universal lesion detector (MP3D-style) on composite "
                                    "cases: synthetic lesions and LIDC train nodules in real CTs and phantoms")
    p.add_argument("--data-ct", required=True, help="folder with the real host CTs (chest_ct_crop_1p5mm.nii.gz, "
                   "abdomen_lung_base_dicom/), e.g. ../shared/data/ct")
    p.add_argument("--lidc", required=True, help="lidc_voi folder (train split for training, val for validation)")
    p.add_argument("--out", required=True, help="model folder to write (uld.pt, config.json)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--n-cases", type=int, default=d.data.n_cases, help="training cases (default %(default)s)")
    p.add_argument("--n-val-cases", type=int, default=d.n_val_cases, help="validation cases (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default %(default)s)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=d.device, help="where the network trains")
    p.add_argument("--cache-dir", help="keep the built cases here between runs")
    p.add_argument("--hosts", nargs="+", choices=list(HOST_KINDS), default=list(d.data.hosts),
                   help="host kinds cycled through (default %(default)s; whole_body and pancreas need their CTs "
                        "under --data-ct)")
    p.add_argument("--host-window-mm", type=float, help="cut real hosts to a random z window of this length per case")
    p.add_argument("--scanner-augmentation", action="store_true", help="re-render each case as another scanner would")
    p.add_argument("--real-texture", action="store_true", help="lesion noise from the host's own tissue, necrotic "
                   "centres (lunglesionai.datagen.lesion_appearance)")
    p.add_argument("--negatives-per-case", type=int, default=d.data.negatives_per_case,
                   help="lesion-free slabs per case (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="warm-up steps (default %(default)s)")
    p.add_argument("--init", help="model folder whose weights training starts from (fine-tuning)")
    p.add_argument("--checkpoint", help="checkpoint file: saved every 100 steps, resumed from when it exists")
    p.add_argument("--val-seed", type=int, help="seed of the validation cases (default: --seed; 0 gives the "
                   "first release's validation set)")
    p.set_defaults(func=run_train_uld)
    return p


FIRST_RELEASE_DATA = {"hosts": DEFAULT_HOSTS, "host_window_mm": None, "scanner_augmentation": False,
                      "real_texture": False, "negatives_per_case": ULDTrainConfig().data.negatives_per_case}
"""Validation cases are always built like the first release's (its hosts and rendering, the seed's val stream), so
validation numbers of differently trained models are on the same cases."""


def run_train_uld(args: argparse.Namespace) -> int:
    """``lunglesionai train uld``: build the cases, train, validate, write the model; prints a JSON summary."""
    from dataclasses import replace

    torch.set_num_threads(args.threads)
    base = ULDTrainConfig()
    data = replace(base.data, n_cases=args.n_cases, seed=args.seed, hosts=tuple(args.hosts),
                   host_window_mm=args.host_window_mm, scanner_augmentation=args.scanner_augmentation,
                   real_texture=args.real_texture, negatives_per_case=args.negatives_per_case)
    config = replace(base, steps=args.steps, seed=args.seed, threads=args.threads, device=args.device,
                     n_val_cases=args.n_val_cases, lr=args.lr, warmup_steps=args.warmup_steps, data=data)
    init_state, init_sha = None, None
    if args.init:
        from lunglesionai.nets.model_store import load_model

        _, init_state, init_sha = load_model(args.init, ULD_FORMAT, "lunglesionai train uld")
    start = time.monotonic()
    hosts: dict = {}
    train_cases = build_cases(config.data, args.data_ct, args.lidc, args.cache_dir, host_cache=hosts)
    val_seed = args.seed if args.val_seed is None else args.val_seed
    val_data = replace(config.data, **FIRST_RELEASE_DATA, seed=val_seed)
    val_cases = (build_cases(validation_config(val_data, config.n_val_cases),
                             args.data_ct, args.lidc, args.cache_dir, host_cache=hosts) if config.n_val_cases else [])
    data_seconds = time.monotonic() - start
    result = train_uld(train_cases, config, val_cases, init_state=init_state, checkpoint=args.checkpoint)
    training = asdict(config)
    state = {k: v.cpu() for k, v in result.detector.network.state_dict().items()}
    sha = save_model(args.out, state, ULD_WEIGHTS_FILE, {
        "format": ULD_FORMAT,
        "network": config.data.network.to_dict(),
        "training": training,
        "train_seconds": round(result.seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "validation": result.validation,
        "operating_point": {"min_score": round(result.min_score, 4), "chosen_at_fp_per_image": OPERATING_FP_RATE},
        "fine_tuned_from": init_sha,
        "data": f"composites: synthetic DeepLesion-class lesions and LIDC-IDRI train-split nodules in hosts "
                f"{list(config.data.hosts)} (real CTs and phantoms); validation: val-split nodules in the first "
                f"release's hosts, seed {val_seed}. Not clinical data.",
    })
    summary = {"out": str(Path(args.out)), "sha256": sha, "train_seconds": round(result.seconds, 1),
               "data_seconds": round(data_seconds, 1), "final_loss": float(np.mean(result.losses[-100:])),
               "train_cases": len(train_cases), "val_cases": len(val_cases),
               "validation": None if result.validation is None else {
                   k: result.validation[k] for k in ("sensitivity_at_fp", "mean_sensitivity")}}
    print(json.dumps(summary, indent=1))
    return 0
