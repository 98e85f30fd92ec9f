"""``lunglesionai train fpr-hosts``: the FP reduction trained on many real host CTs, validated leave-one-host-out.

Each ``--host NAME=PATH`` is a real CT (file or DICOM folder). A DICOM folder holding an LIDC-IDRI reader XML is read
with its marks (:mod:`lunglesionai.datasets.lidc_xml`): a detection on a reader's nodule ≥ 3 mm is a positive, on any
other mark neither. Mined rows are cached per host in ``--cache-dir`` (``<name>.npz``; a host already there is not
mined again, so an interrupted run resumes). Then, with ``--leave-one-host-out``, one model per host is trained
without it and measured on it (the table goes into the model's ``config.json``), and the shipped model is trained on
all hosts; its operating point is the lowest threshold at which the held-out hosts' real scans average at most
``--max-findings-per-scan`` findings (:mod:`lunglesionai.training.fpr_hosts`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.app.arguments import parse_host

__all__ = ["add_train_fpr_hosts_parser", "run_train_fpr_hosts", "parse_host", "choose_operating_point"]

logger = logging.getLogger(__name__)


def add_train_fpr_hosts_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train fpr-hosts`` on what ``add_subparsers()`` returned for ``lunglesionai train``."""
    from lunglesionai.training.fp_reduction import FprTrainConfig

    p = subparsers.add_parser("fpr-hosts", help="train the FP-reduction classifier on real host CTs (hard "
                              "negatives from every real scan, LIDC nodules pasted at each host's grid), validated "
                              "leave-one-host-out")
    p.add_argument("--lidc", required=True, help="lidc_voi folder (train split pasted for training, val for validation)")
    p.add_argument("--host", action="append", type=parse_host, required=True, metavar="NAME=PATH",
                   help="a real host CT (file or DICOM folder, with its LIDC XML when it has one); repeat")
    p.add_argument("--cache-dir", required=True, help="mined rows per host (<name>.npz), reused between runs")
    p.add_argument("--out", required=True, help="model folder to write (fpr.pt, config.json)")
    p.add_argument("--augmented", type=int, default=2, help="scanner-augmented copies per host (default %(default)s)")
    p.add_argument("--pasted-variants", type=int, default=12, help="more augmented copies per host that only receive "
                   "pasted nodules (more positives; default %(default)s)")
    p.add_argument("--batch-size", type=int, default=FprTrainConfig.batch_size,
                   help="crops per step, half positive (default %(default)s)")
    p.add_argument("--steps", type=int, default=FprTrainConfig.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--leave-one-host-out", action="store_true", help="validate each host with a model trained "
                   "without it before training the shipped model")
    p.add_argument("--max-findings-per-scan", type=float, default=1.0,
                   help="operating point: the lowest threshold whose held-out real scans average at most this many "
                        "findings (default %(default)s)")
    p.add_argument("--operating-point-hosts", nargs="+", metavar="NAME",
                   help="the held-out hosts whose findings decide the operating point (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    p.set_defaults(func=run_train_fpr_hosts)
    return p


def _marks(path: str) -> np.ndarray:
    """(M, 5) reader marks ``[x, y, z, radius_mm, is_nodule]`` (LPS mm) of a DICOM folder with an LIDC XML: nodules
    ≥ 3 mm of any reader (consensus centre, half the equivalent diameter), the rest (< 3 mm, non-nodules: 5 mm, the
    LUNA16 script's size for marks of unknown size); empty for a scan without XML."""
    folder = Path(path)
    if not folder.is_dir() or not list(folder.glob("*.xml")):
        return np.zeros((0, 5))
    from lunglesionai.datasets.lidc_xml import luna16_rows, read_lidc_scan
    from lunglesionai.evaluation.metrics.luna16_hits import EXCLUDED_DEFAULT_DIAMETER_MM

    nodules, others = luna16_rows(read_lidc_scan(folder), min_readers=1)
    rows = [(*r[1:4], r[4] / 2, 1.0) for r in nodules]
    rows += [(*r[1:4], (r[4] if r[4] > 0 else EXCLUDED_DEFAULT_DIAMETER_MM) / 2, 0.0) for r in others]
    return np.array(rows, float).reshape(-1, 5)


def choose_operating_point(loho: dict, max_findings: float,
                           hosts: Optional[Sequence[str]] = None) -> tuple[float, dict]:
    """The lowest threshold at which the held-out hosts' real scans average at most ``max_findings`` findings.

    Args:
        loho: :func:`lunglesionai.training.fpr_hosts.leave_one_host_out`'s result.
        max_findings: the allowed mean findings per real scan.
        hosts: the held-out hosts that decide (default: all); e.g. leave out a host whose slices are too thick for
            nodule detection (the pipeline warns on it), whose count says nothing about usable scans.

    Returns:
        (threshold, the table row at it: the deciding hosts' mean and every host's count). The highest threshold
        when none qualifies.

    Raises:
        KeyError: a host in ``hosts`` has no fold.
    """
    deciding = list(loho["folds"]) if hosts is None else list(hosts)
    keys = list(loho["folds"][deciding[0]]["findings_per_scan"])
    mean = {k: float(np.mean([loho["folds"][h]["findings_per_scan"][k] for h in deciding])) for k in keys}
    ok = [k for k, v in mean.items() if v <= max_findings]
    key = min(ok, key=float) if ok else max(mean, key=float)
    return float(key), {"mean_findings_per_scan": round(mean[key], 2), "deciding_hosts": deciding,
                        "per_host": {h: f["findings_per_scan"][key] for h, f in loho["folds"].items()}}


def run_train_fpr_hosts(args: argparse.Namespace) -> int:
    """``lunglesionai train fpr-hosts``: mine (cached), validate leave-one-host-out, train on all, write."""
    import torch

    from lunglesionai.datagen.composites import NoduleSource
    from lunglesionai.stages.fp_reduction import DEFAULT_GRID_SPACING_MM, FprConfig
    from lunglesionai.training.fp_reduction import FprTrainConfig, train_fpr
    from lunglesionai.training.fpr_hosts import (
        HostScan,
        apply_marks,
        concatenate_rows,
        leave_one_host_out,
        load_rows,
        mine_host,
        mine_pasted,
        training_arrays,
    )

    torch.set_num_threads(args.threads)
    names = [n for n, _ in args.host]
    if len(set(names)) != len(names):
        raise ValueError(f"--host names repeat: {names}")
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    network = FprConfig(context=True)
    config = FprTrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                            network=network)
    train_source, val_source = NoduleSource(args.lidc, "train"), NoduleSource(args.lidc, "val")
    hosts = []
    for i, (name, path) in enumerate(args.host):
        marks = _marks(path)
        cached = cache / f"{name}.npz"
        if not cached.exists():
            start = time.monotonic()
            rows = concatenate_rows([
                mine_host(HostScan(name, path), train_source, val_source, network, n_augmented=args.augmented,
                          seed=args.seed + i, threads=args.threads),
                mine_pasted(HostScan(name, path), train_source, network, n_variants=args.pasted_variants,
                            seed=args.seed + 1000 + i)])
            rows.save(cached)
            logger.info("mined %s: %d rows in %.0f s", name, len(rows.labels), time.monotonic() - start)
        rows = apply_marks(load_rows(cached), marks)
        if rows.crops.shape[1] != network.in_channels:
            raise ValueError(f"{cached}: mined for another network ({rows.crops.shape[1]} channels); delete it")
        hosts.append(rows)
    out = Path(args.out)
    extra = {"grid_spacing_mm": DEFAULT_GRID_SPACING_MM, "candidates": "combined",
             "hosts": {h.name: {"path": h.info.get("path"), "spacing_mm": h.info.get("spacing_mm"),
                                "rows": int(len(h.labels)), "positives": int(np.sum(h.labels == 1)),
                                "negatives": int(np.sum(h.labels == 0))} for h in hosts},
             "data": "real host CTs (every detection a negative unless on a reader's mark) and scanner-augmented "
                     "copies, LIDC-IDRI train-split nodules pasted at each host's grid"}
    if args.leave_one_host_out:
        loho = leave_one_host_out(hosts, config, cache / "leave_one_host_out")
        threshold, row = choose_operating_point(loho, args.max_findings_per_scan, args.operating_point_hosts)
        extra["operating_point"] = {
            "min_score": threshold,
            "rule": f"lowest threshold at which the held-out hosts' real scans average at most "
                    f"{args.max_findings_per_scan:g} findings (leave one host out, candidate level)",
            "held_out": row, "mean_cpm_held_out": loho["mean_cpm"]}
        extra["leave_one_host_out"] = loho
    crops, labels, weights = training_arrays(hosts)
    result = train_fpr(crops, labels, out, config, extra=extra, weights=weights)
    print(json.dumps({**asdict(result), "operating_point": extra.get("operating_point")}, indent=1))
    return 0
