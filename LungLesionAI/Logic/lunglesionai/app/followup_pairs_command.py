"""``lunglesionai make-followup-pairs``: write prior/current pairs with exact truth for ``evaluate followup``
(:mod:`lunglesionai.datagen.followup_pair_sets`; folder format in README, "Comparison with a prior scan").
"""

from __future__ import annotations

import argparse

__all__ = ["fill_make_followup_pairs_parser", "run_make_followup_pairs"]


def fill_make_followup_pairs_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``make-followup-pairs`` to its (already registered) sub-parser; returns it."""
    from lunglesionai.datagen.followup_pair_sets import PAIR_HOST_KINDS

    p.add_argument("--out", required=True, help="output folder: <case>/prior.nii.gz, current.nii.gz, truth.json")
    p.add_argument("--host", choices=PAIR_HOST_KINDS, default="phantom",
                   help="phantom: a nodule-free clinical-size phantom per pair; real: --real-ct warped per pair")
    p.add_argument("--real-ct", help="real host CT (needed for --host real)")
    p.add_argument("--lidc", help="lidc_voi folder: paste real LIDC nodules (default: synthetic ellipsoids)")
    p.add_argument("--split", default="val", help="lidc_voi split of the nodules (default val: never trained on)")
    p.add_argument("--n-pairs", type=int, default=2, help="number of pairs (default 2)")
    p.add_argument("--interval-days", type=float, default=180.0, help="interval written into the truth (default "
                   "180)")
    p.add_argument("--deformation-mm", type=float, nargs=2, default=(5.0, 15.0), metavar=("MIN", "MAX"),
                   help="range of the largest breathing-like displacement over the lungs (default 5 15 mm)")
    p.add_argument("--phantom-preset", choices=["clinical", "small"], default="clinical", help="phantom size")
    p.add_argument("--seed", type=int, default=0, help="seed of the set; pair n uses seed + n")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that lunglesionai wrote")
    p.set_defaults(func=run_make_followup_pairs)
    return p


def run_make_followup_pairs(args: argparse.Namespace) -> int:
    """Build and write the pairs (the output folder is checked before any work); prints a summary; returns 0.

    Raises:
        ValueError, lunglesionai.io.ct_files.CTInputError, OutputPathError: the errors of
            :func:`lunglesionai.datagen.followup_pair_sets.iter_followup_pairs` and
            :func:`lunglesionai.datagen.followup_pairs.write_pairs`.
    """
    from pathlib import Path

    from lunglesionai.datagen.composites import NoduleSource
    from lunglesionai.datagen.followup_pair_sets import iter_followup_pairs
    from lunglesionai.datagen.followup_pairs import FollowupPairConfig, write_pairs

    config = FollowupPairConfig(interval_days=args.interval_days)
    source = NoduleSource(args.lidc, args.split) if args.lidc else None
    prefix = Path(args.real_ct).name.split(".")[0] + "_" if args.host == "real" and args.real_ct else ""
    pairs = iter_followup_pairs(args.n_pairs, host=args.host, real_ct=args.real_ct, nodules=source, config=config,
                                deformation_range_mm=tuple(args.deformation_mm), phantom_preset=args.phantom_preset,
                                seed=args.seed, case_prefix=prefix)
    out = write_pairs(args.out, pairs, overwrite=args.overwrite)
    print(f"wrote {args.n_pairs} pair(s) to {out} (prior.nii.gz, current.nii.gz, truth.json per case); "
          "pairs are warped copies of one scan, not clinical follow-ups")
    return 0
