"""Branching, tapering tube trees: the pulmonary arteries and veins (and, with other settings, the bronchi).

Trees are grown by recursive space partitioning of target points scattered through the lung, in the spirit of
constrained constructive optimisation (Schreiner & Buxbaum, IEEE TBME 1993, doi:10.1109/10.243413) and of the
space-filling airway models of Kitaoka et al. (J Appl Physiol 1999, doi:10.1152/jappl.1999.87.6.2207):

1. a branch starts where its parent ends and grows part of the way towards the centroid of its targets;
2. its targets are split in two along their principal axis, and each half feeds one child;
3. radii follow Murray's law, ``r_parent^3 = r_child1^3 + r_child2^3``, with each child's share of the flow
   proportional to its number of targets; end branches reach their target and taper to the tip radius.

So radius falls from the hilum to the periphery, every branch starts on its parent's end (the tree is
connected), and branches run in all directions through the lung. Branches are drawn as two slightly bent tubes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy
from .config import PhantomConfig
from .lungs import LungMap
from .tubes import Tubes

__all__ = ["TreeParams", "VesselTree", "grow_tree", "sample_targets", "build_vessel_trees"]

#: Murray's law exponent (radius³ is conserved at bifurcations).
MURRAY_EXPONENT = 3.0
#: Distance targets keep from the pleura at reference scale, mm (vessels fade out a little below the pleura).
VESSEL_PLEURA_MARGIN_MM = 5.0
#: Radius of the mediastinal stem that joins each tree to the heart, relative to the tree's root radius.
HILAR_STEM_RADIUS_FACTOR = 1.4


@dataclass(frozen=True)
class TreeParams:
    """How a tree grows.

    Args:
        root_radius_mm, tip_radius_mm: radius at the root and at the end of each terminal branch, mm.
        reach: (lo, hi) fraction of the way to its targets' centroid that an inner branch grows.
        leaf_reach: fraction of the way to its target that a terminal branch grows.
        split: (lo, hi) fraction of the targets the first child gets (asymmetric branching).
        bend: standard deviation of a branch's mid-point displacement, as a fraction of its length.
        min_length_mm: shortest inner branch, mm.
    """

    root_radius_mm: float
    tip_radius_mm: float
    reach: tuple[float, float] = (0.35, 0.6)
    leaf_reach: float = 1.0
    split: tuple[float, float] = (0.3, 0.7)
    bend: float = 0.07
    min_length_mm: float = 2.0


@dataclass(frozen=True)
class VesselTree:
    """A tube tree in LPS mm.

    Args:
        name: e.g. "right artery".
        lung_label: 1 (right) or 2 (left).
        tubes: the tubes; tube 0 is the root.
        parent: (N,) int, index of the tube whose end is this tube's start (-1 for the root).
        generation: (N,) int, branching generation (0 at the root; the two halves of a bent branch share it).
    """

    name: str
    lung_label: int
    tubes: Tubes
    parent: np.ndarray
    generation: np.ndarray

    @property
    def root_lps_mm(self) -> np.ndarray:
        """(3,) start of the root tube, mm."""
        return self.tubes.start_lps_mm[0]

    def path_length_mm(self) -> np.ndarray:
        """(N,) distance along the tree from the root to the start of each tube, mm."""
        lengths = self.tubes.length_mm
        out = np.zeros(len(lengths))
        for i in range(1, len(lengths)):  # parents always precede their children
            p = self.parent[i]
            out[i] = out[p] + lengths[p] if p >= 0 else 0.0
        return out


def sample_targets(lung_map: LungMap, label: int, n: int, margin_mm: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) LPS points (mm) drawn uniformly from lung ``label`` at least ``margin_mm`` from its pleura.

    Raises:
        ValueError: the lung has no such point (margin too large for the lung).
    """
    pool = lung_map.candidates(label, margin_mm)
    if len(pool) == 0:
        raise ValueError(f"lung {label} has no point {margin_mm:.1f} mm from its pleura")
    pick = pool[rng.integers(0, len(pool), size=n)]
    return pick + rng.uniform(-0.5, 0.5, size=pick.shape) * lung_map.step_mm


def grow_tree(root_lps_mm, targets: np.ndarray, params: TreeParams, rng: np.random.Generator,
              name: str = "", lung_label: int = 0, stem: tuple | None = None) -> VesselTree:
    """Grow a tree from ``root_lps_mm`` that feeds every target point.

    Args:
        root_lps_mm: (3,) start of the tree (hilum), mm.
        targets: (M, 3) points the terminal branches end at (LPS mm), M >= 1.
        params: growth parameters.
        rng: generator for reach, split and bend.
        name, lung_label: stored on the tree.
        stem: optional (start_lps_mm, radius_mm) of a tube from the mediastinum to the root, prepended as tube 0.

    Returns:
        The tree; it has ``2 * (2M - 1)`` tubes (plus the stem).
    """
    starts, ends, r0s, r1s, parents, gens = [], [], [], [], [], []

    def add(a, b, ra, rb, parent, gen):
        starts.append(a), ends.append(b), r0s.append(ra), r1s.append(rb), parents.append(parent), gens.append(gen)
        return len(starts) - 1

    root = np.asarray(root_lps_mm, dtype=float)
    top = -1
    if stem is not None:
        top = add(np.asarray(stem[0], float), root, stem[1], params.root_radius_mm, -1, 0)
    stack = [(root, np.arange(len(targets)), params.root_radius_mm, top, 1 if stem is not None else 0)]
    while stack:
        start, idx, radius, parent, gen = stack.pop()
        pts = targets[idx]
        if len(idx) == 1:
            end = start + params.leaf_reach * (pts[0] - start)
            _add_bent(add, start, end, radius, params.tip_radius_mm, parent, gen, params.bend, rng)
            continue
        end = _inner_end(start, pts.mean(axis=0), params, rng)
        last = _add_bent(add, start, end, radius, radius, parent, gen, params.bend, rng)
        for part in _split(pts, idx, params.split, rng):
            share = (len(part) / len(idx)) ** (1.0 / MURRAY_EXPONENT)
            stack.append((end, part, max(radius * share, params.tip_radius_mm), last, gen + 1))
    tubes = Tubes.from_lists(starts, ends, r0s, r1s)
    return VesselTree(name, lung_label, tubes, np.asarray(parents, dtype=int), np.asarray(gens, dtype=int))


def _inner_end(start: np.ndarray, centroid: np.ndarray, params: TreeParams, rng: np.random.Generator) -> np.ndarray:
    direction = centroid - start
    dist = float(np.linalg.norm(direction))
    if dist < 1e-6:
        direction, dist = rng.standard_normal(3), 1.0
        direction /= np.linalg.norm(direction)
    length = max(rng.uniform(*params.reach) * dist, params.min_length_mm)
    return start + direction / dist * length


def _add_bent(add, start, end, r_start, r_end, parent, gen, bend, rng) -> int:
    """Add a branch as two tubes meeting at a displaced mid-point; return the index of the second."""
    axis = end - start
    length = float(np.linalg.norm(axis))
    mid = 0.5 * (start + end)
    if length > 1e-6 and bend > 0:
        offset = rng.standard_normal(3)
        offset -= axis * (offset @ axis) / (length * length)
        mid = mid + offset * bend * length / np.sqrt(2.0)
    r_mid = 0.5 * (r_start + r_end)
    first = add(start, mid, r_start, r_mid, parent, gen)
    return add(mid, end, r_mid, r_end, first, gen)


def _split(pts: np.ndarray, idx: np.ndarray, split: tuple[float, float], rng: np.random.Generator):
    """Split target indices in two along the principal axis of their points."""
    centred = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    order = np.argsort(centred @ vt[0], kind="stable")
    cut = int(np.clip(round(len(idx) * rng.uniform(*split)), 1, len(idx) - 1))
    return idx[order[:cut]], idx[order[cut:]]


def build_vessel_trees(anat: Anatomy, lung_map: LungMap, config: PhantomConfig,
                       rng: np.random.Generator) -> list[VesselTree]:
    """The four pulmonary vessel trees: artery and vein of the right and the left lung.

    Arteries start at the upper hilum with a stem from the pulmonary trunk's bifurcation; veins at the lower
    hilum with a stem from the left atrium.
    """
    params = TreeParams(config.resolved_vessel_root_radius_mm, config.vessel_min_radius_mm)
    margin = max(VESSEL_PLEURA_MARGIN_MM * anat.scale, 2.0)
    stem_radius = HILAR_STEM_RADIUS_FACTOR * config.resolved_vessel_root_radius_mm
    bifurcation = anat.pulmonary_trunk_path[-1]
    trees = []
    for lung in anat.lungs:
        side = "right" if lung.label == 1 else "left"
        for kind, root, stem_start in (("artery", lung.artery_root, bifurcation),
                                       ("vein", lung.vein_root, anat.left_atrium)):
            targets = sample_targets(lung_map, lung.label, config.resolved_vessel_leaves_per_tree, margin, rng)
            trees.append(grow_tree(root, targets, params, rng, f"{side} {kind}", lung.label,
                                   stem=(stem_start, stem_radius)))
    return trees

