"""Tapered tubes (vessels, airways, ribs) and their supersampled partial-volume rendering.

A tube is a straight segment from ``start`` to ``end`` whose radius changes linearly from ``radius_start`` to
``radius_end`` (a "round cone"). Its signed distance is approximated by the distance to the axis minus the radius
at the closest axis point, which is exact for constant radius and close for the gentle tapers used here.

Rendering works in each tube's own bounding box, so cost follows the tubes, not the volume: the signed distance
is evaluated at voxel centres, and only voxels the surface may cross (``|sd|`` under half the voxel diagonal) are
supersampled on a regular ``n × n × n`` sub-grid; the rest are fully in or out. Tubes of one layer are united
with a voxel-wise maximum, so junctions and overlaps do not double-count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid

__all__ = ["Tubes", "tube_signed_distance", "render_tubes", "subsample_offsets", "OCCUPANCY_SCALE"]

#: Occupancy is stored as uint8: 255 means the voxel is full.
OCCUPANCY_SCALE = 255
#: Longest piece a tube is cut into before rendering, in tube radii (keeps bounding boxes tight).
PIECE_LENGTH_RADII = 4.0
#: Shortest such piece, mm.
PIECE_MIN_LENGTH_MM = 4.0


@dataclass(frozen=True)
class Tubes:
    """N tapered tubes in LPS mm.

    Args:
        start_lps_mm, end_lps_mm: (N, 3) float end points (x, y, z), mm.
        radius_start_mm, radius_end_mm: (N,) radii at the two ends, mm.
    """

    start_lps_mm: np.ndarray
    end_lps_mm: np.ndarray
    radius_start_mm: np.ndarray
    radius_end_mm: np.ndarray

    def __post_init__(self) -> None:
        for name in ("start_lps_mm", "end_lps_mm", "radius_start_mm", "radius_end_mm"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        n = len(self.radius_start_mm)
        if self.start_lps_mm.shape != (n, 3) or self.end_lps_mm.shape != (n, 3) or self.radius_end_mm.shape != (n,):
            raise ValueError(
                f"Tubes: starts {self.start_lps_mm.shape}, ends {self.end_lps_mm.shape} must be (N, 3) and radii "
                f"{self.radius_start_mm.shape}, {self.radius_end_mm.shape} (N,)"
            )

    def __len__(self) -> int:
        return len(self.radius_start_mm)

    @classmethod
    def from_lists(cls, starts, ends, r_starts, r_ends) -> "Tubes":
        """Build from lists (empty lists give zero tubes)."""
        return cls(np.reshape(starts, (-1, 3)), np.reshape(ends, (-1, 3)), np.ravel(r_starts), np.ravel(r_ends))

    @classmethod
    def concat(cls, parts: list["Tubes"]) -> "Tubes":
        """All tubes of ``parts`` in order."""
        if not parts:
            return cls.from_lists([], [], [], [])
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in
                     ("start_lps_mm", "end_lps_mm", "radius_start_mm", "radius_end_mm")))

    def with_radii(self, scale: float = 1.0, add_mm: float = 0.0) -> "Tubes":
        """Same axes, radii ``r * scale + add_mm`` (e.g. an airway's outer wall from its lumen)."""
        return Tubes(self.start_lps_mm, self.end_lps_mm, self.radius_start_mm * scale + add_mm,
                     self.radius_end_mm * scale + add_mm)

    @property
    def length_mm(self) -> np.ndarray:
        """(N,) tube lengths, mm."""
        return np.linalg.norm(self.end_lps_mm - self.start_lps_mm, axis=1)

    def pieces(self) -> "Tubes":
        """The tubes cut into pieces no longer than ``max(4 radii, 4 mm)`` (same union, tighter boxes)."""
        rmax = np.maximum(self.radius_start_mm, self.radius_end_mm)
        n_pieces = np.maximum(np.ceil(self.length_mm / np.maximum(PIECE_LENGTH_RADII * rmax,
                                                                 PIECE_MIN_LENGTH_MM)), 1).astype(int)
        idx = np.repeat(np.arange(len(self)), n_pieces)
        k = np.concatenate([np.arange(n) for n in n_pieces]) if len(self) else np.zeros(0)
        t0 = (k / n_pieces[idx])[:, None]
        t1 = ((k + 1) / n_pieces[idx])[:, None]
        d = (self.end_lps_mm - self.start_lps_mm)[idx]
        dr = (self.radius_end_mm - self.radius_start_mm)[idx]
        return Tubes(self.start_lps_mm[idx] + t0 * d, self.start_lps_mm[idx] + t1 * d,
                     self.radius_start_mm[idx] + t0[:, 0] * dr, self.radius_start_mm[idx] + t1[:, 0] * dr)


def tube_signed_distance(x, y, z, start, end, r_start: float, r_end: float) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) from broadcastable points (x, y, z) to one tube.

    Example:
        >>> tube_signed_distance(np.array([0.0, 3.0]), 0.0, 5.0, (0, 0, 0), (0, 0, 10), 1.0, 1.0).tolist()
        [-1.0, 2.0]
    """
    d = np.subtract(end, start, dtype=float)
    length2 = max(float(d @ d), 1e-12)
    ax, ay, az = x - start[0], y - start[1], z - start[2]
    t = np.clip((ax * d[0] + ay * d[1] + az * d[2]) / length2, 0.0, 1.0)
    qx, qy, qz = ax - t * d[0], ay - t * d[1], az - t * d[2]
    return np.sqrt(qx * qx + qy * qy + qz * qz) - (r_start + t * (r_end - r_start))


def subsample_offsets(spacing_mm, n: int) -> np.ndarray:
    """(n³, 3) offsets (x, y, z) mm of a regular n×n×n sub-grid centred in a voxel of size ``spacing_mm``."""
    f = (np.arange(n) + 0.5) / n - 0.5
    gz, gy, gx = np.meshgrid(f * spacing_mm[2], f * spacing_mm[1], f * spacing_mm[0], indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)


def render_tubes(tubes: Tubes, grid: Grid, supersample: int) -> np.ndarray:
    """Occupancy of the union of ``tubes`` on ``grid``: (Z, Y, X) uint8, 0 = empty … 255 = full.

    Args:
        tubes: the tubes (LPS mm); parts outside the grid are skipped.
        grid: the voxel grid.
        supersample: sub-samples per axis for voxels the surface crosses (1: voxel-centre test only).

    Returns:
        (Z, Y, X) uint8 occupancy (fraction × 255, voxel-wise maximum over tubes).
    """
    layer = np.zeros(grid.shape_zyx, dtype=np.uint8)
    pieces = tubes.pieces()
    offsets = subsample_offsets(grid.spacing_mm, supersample)
    half_diag = 0.5 * float(np.linalg.norm(grid.spacing_mm))
    for i in range(len(pieces)):
        _render_piece(pieces, i, grid, offsets, half_diag, layer)
    return layer


def _render_piece(tubes: Tubes, i: int, grid: Grid, offsets: np.ndarray, half_diag: float,
                  layer: np.ndarray) -> None:
    """Max-accumulate tube ``i``'s occupancy into ``layer`` (the renderer's own buffer) inside its box."""
    p0, p1 = tubes.start_lps_mm[i], tubes.end_lps_mm[i]
    r0, r1 = float(tubes.radius_start_mm[i]), float(tubes.radius_end_mm[i])
    reach = max(r0, r1) + half_diag
    box = grid.box_slices(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if box is None:
        return
    z, y, x = grid.slice_coords(box)
    sd = tube_signed_distance(x, y, z, p0, p1, r0, r1)
    occ = (sd < 0).astype(np.float32)
    near = np.abs(sd) < half_diag
    if len(offsets) > 1 and near.any():
        kk, jj, ii = np.nonzero(near)
        px = x.ravel()[ii][:, None] + offsets[None, :, 0]
        py = y.ravel()[jj][:, None] + offsets[None, :, 1]
        pz = z.ravel()[kk][:, None] + offsets[None, :, 2]
        occ[kk, jj, ii] = (tube_signed_distance(px, py, pz, p0, p1, r0, r1) < 0).mean(axis=1)
    quantised = (occ * OCCUPANCY_SCALE + 0.5).astype(np.uint8)
    np.maximum(layer[box], quantised, out=layer[box])
