"""Tubular structures of the chest other than the pulmonary vessel trees: ribs, airways and great vessels.

* Ribs: twelve pairs of tubes of cortical bone with a marrow core. Each rib leaves its vertebra's transverse
  process, follows the thoracic cage just outside the cavity and descends anteriorly (by ``rib_drop`` mm), so an
  axial slice cuts it as ovals and short arcs, as in real CT. The lower ribs are shorter (floating ribs).
* Airways: trachea from the thoracic inlet to the carina, the two main bronchi to the hila, and in each lung a
  short bronchial tree grown like the vessel trees (:func:`.vessels.grow_tree`); each is an air lumen inside a
  soft-tissue wall.
* Great vessels: aorta (ascending, arch, descending), pulmonary trunk and superior vena cava.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy
from .config import PhantomConfig
from .lungs import LungMap
from .tubes import Tubes
from .vessels import TreeParams, grow_tree, sample_targets

__all__ = ["RibTubes", "AirwayTubes", "build_ribs", "build_airways", "build_great_vessels"]

#: Marrow radius as a fraction of the rib's outer radius.
RIB_MARROW_FRACTION = 0.55
#: Points along each rib's centreline.
RIB_POINTS = 16
#: Angle (rad from the posterior midline) where ribs start and where the longest ones end.
RIB_ANGLES_RAD = (0.32, 2.55)
#: Ribs counted from the top after which they shorten (floating ribs), and by how much per rib (rad).
RIB_SHORTEN_AFTER, RIB_SHORTEN_RAD = 6, 0.17
#: Airway wall thickness: a fraction of the lumen radius plus a constant, mm (Weibel-like proportions).
AIRWAY_WALL_FRACTION, AIRWAY_WALL_MM = 0.18, 0.7
#: Main bronchus lumen radius relative to the trachea's lumen.
BRONCHUS_RADIUS_FACTOR = 0.72
#: Radius at the ends of the intrapulmonary bronchial trees, mm.
AIRWAY_TIP_RADIUS_MM = 1.0
#: Distance bronchial targets keep from the pleura at reference scale, mm (airways stay central).
AIRWAY_PLEURA_MARGIN_MM = 14.0
#: How far the trachea reaches above the first rib, reference mm (beyond any field of view).
TRACHEA_ABOVE_RIBS_MM = 150.0


@dataclass(frozen=True)
class RibTubes:
    """Ribs as two concentric tube sets: ``cortex`` (outer surface) and ``marrow`` (inner core), LPS mm."""

    cortex: Tubes
    marrow: Tubes


@dataclass(frozen=True)
class AirwayTubes:
    """Airways as two tube sets sharing axes: ``wall`` (outer surface) and ``lumen`` (air), LPS mm."""

    wall: Tubes
    lumen: Tubes


def build_ribs(anat: Anatomy) -> RibTubes:
    """Twelve pairs of ribs around the thoracic cavity.

    Returns:
        :class:`RibTubes`; the same tubes with radius ``rib_radius`` (cortex) and 55 % of it (marrow).
    """
    starts, ends = [], []
    for k in range(anat.rib_count):
        for sign in (-1.0, 1.0):
            pts = _rib_centreline(anat, k, sign)
            starts.append(pts[:-1])
            ends.append(pts[1:])
    s, e = np.concatenate(starts), np.concatenate(ends)
    r = np.full(len(s), anat.rib_radius)
    cortex = Tubes(s, e, r, r)
    return RibTubes(cortex, cortex.with_radii(RIB_MARROW_FRACTION))


def _rib_centreline(anat: Anatomy, k: int, sign: float) -> np.ndarray:
    """(RIB_POINTS + 1, 3) LPS points of rib ``k`` (0 = first rib) on side ``sign`` (-1 right, +1 left)."""
    z_post = anat.rib_top_z - k * anat.rib_step_z
    theta_end = RIB_ANGLES_RAD[1] - RIB_SHORTEN_RAD * max(0, k - RIB_SHORTEN_AFTER)
    theta = np.linspace(RIB_ANGLES_RAD[0], theta_end, RIB_POINTS)
    z = z_post - anat.rib_drop * 0.5 * (1.0 - np.cos(theta))
    fx, fy = anat.cavity_scale(z)
    ax, ay = anat.cavity_semi
    x = sign * (ax * fx + anat.rib_offset) * np.sin(theta)
    y = anat.cavity_center_y + (ay * fy + anat.rib_offset) * np.cos(theta)
    head = np.array([[sign * anat.transverse_center[0], anat.transverse_center[1], z_post + anat.rib_radius]])
    return np.concatenate([head, np.stack([x, y, z], axis=1)])


def build_great_vessels(anat: Anatomy) -> Tubes:
    """Aorta, pulmonary trunk and superior vena cava as tubes (LPS mm)."""
    parts = []
    for path, radius in ((anat.aorta_path, anat.aorta_radius), (anat.pulmonary_trunk_path, anat.pulmonary_trunk_radius),
                         (anat.svc_path, anat.svc_radius)):
        p = np.asarray(path, dtype=float)
        r = np.full(len(p) - 1, radius)
        parts.append(Tubes(p[:-1], p[1:], r, r))
    return Tubes.concat(parts)


def build_airways(anat: Anatomy, lung_map: LungMap, config: PhantomConfig, rng: np.random.Generator) -> AirwayTubes:
    """Trachea, main bronchi and one bronchial tree per lung.

    Args:
        anat: the anatomy.
        lung_map: coarse lung map (targets of the bronchial trees are drawn from it).
        config: ``airway_leaves_per_lung`` sets the trees' size.
        rng: the airways' random stream.

    Returns:
        :class:`AirwayTubes`.
    """
    wall = max(anat.trachea_radius * AIRWAY_WALL_FRACTION, AIRWAY_WALL_MM)
    lumen_r = anat.trachea_radius - wall
    cx, cy = anat.trachea_center
    carina = np.array([cx, cy, anat.carina_z])
    top = np.array([cx, cy, anat.rib_top_z + TRACHEA_ABOVE_RIBS_MM * anat.scale])
    bronchus_r = BRONCHUS_RADIUS_FACTOR * lumen_r
    lumen = [Tubes([top], [carina], [lumen_r], [lumen_r])]
    margin = max(AIRWAY_PLEURA_MARGIN_MM * anat.scale, 4.0)
    params = TreeParams(bronchus_r, AIRWAY_TIP_RADIUS_MM, leaf_reach=0.6, bend=0.03)
    for lung in anat.lungs:
        end = np.asarray(lung.bronchus_end, dtype=float)
        lumen.append(Tubes([carina], [end], [lumen_r * 0.9], [bronchus_r]))
        targets = sample_targets(lung_map, lung.label, config.resolved_airway_leaves_per_lung, margin, rng)
        lumen.append(grow_tree(end, targets, params, rng, lung_label=lung.label).tubes)
    lumen_tubes = Tubes.concat(lumen)
    wall_tubes = lumen_tubes.with_radii(1.0 + AIRWAY_WALL_FRACTION, AIRWAY_WALL_MM)
    return AirwayTubes(wall_tubes, lumen_tubes)
