"""``lunglesionai make-composites``: the argument parser and runner of the composite-set writer
(:mod:`lunglesionai.datagen.composites`).
"""

from __future__ import annotations

from lunglesionai.datagen.composite_sets import HOST_KINDS, build_composite_set, write_composite_set
from lunglesionai.datagen.composites import CompositeConfig, NoduleSource

__all__ = ["add_make_composites_parser", "fill_make_composites_parser", "run_make_composites"]


def add_make_composites_parser(subparsers):
    """Register ``make-composites`` on the top-level sub-parsers (``set_defaults(func=run_make_composites)``).

    Args:
        subparsers: what ``parser.add_subparsers()`` returned for ``lunglesionai``.

    Returns:
        The new sub-parser.
    """
    p = subparsers.add_parser("make-composites", help="paste real LIDC nodules into real / phantom lungs "
                              "(LUNA16-style folder; not clinical scans)")
    return fill_make_composites_parser(p)


def fill_make_composites_parser(p):
    """Add the arguments of ``make-composites`` to its (already registered) sub-parser; returns it."""
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--lidc", required=True, help="lidc_voi folder (nodules.csv, images/, masks/)")
    p.add_argument("--split", default="val", help="lidc_voi split of the nodules: train or val (default val)")
    p.add_argument("--n-cases", type=int, default=4, help="number of composites (default 4)")
    p.add_argument("--n-nodules", type=int, default=CompositeConfig.n_nodules, help="nodules pasted per case")
    p.add_argument("--host", choices=HOST_KINDS, default="both", help="host CTs (both: alternate real, phantom)")
    p.add_argument("--real-ct", help="real host CT (needed unless --host phantom)")
    p.add_argument("--phantom-preset", choices=["small", "clinical"], default="clinical", help="phantom size")
    p.add_argument("--juxta-pleural-fraction", type=float, default=0.0, help="share placed on the pleura")
    p.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that lunglesionai wrote")
    p.set_defaults(func=run_make_composites)
    return p


def run_make_composites(args) -> int:
    """``lunglesionai make-composites``: build and write a composite set; prints a summary; returns 0."""
    config = CompositeConfig(n_nodules=args.n_nodules, seed=args.seed, split=args.split,
                             juxta_pleural_fraction=args.juxta_pleural_fraction)
    source = NoduleSource(args.lidc, args.split)
    composites = build_composite_set(args.n_cases, source, config, host=args.host, real_ct_path=args.real_ct,
                                     phantom_preset=args.phantom_preset)
    out = write_composite_set(args.out, composites, overwrite=args.overwrite)
    print(f"wrote {args.n_cases} composite(s) to {out} (annotations.csv, seriesuids.csv, truth.json); "
          "composites are not clinical scans")
    return 0
