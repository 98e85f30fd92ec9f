"""Nodule-like and vessel-like crops in noise, shared by the FP-reduction and pipeline tests."""

from __future__ import annotations

import numpy as np


def _crops(n: int, kind: str, rng: np.random.Generator, size: int = 18) -> np.ndarray:
    """Balls (nodule-like) or straight tubes (vessel-like) through the centre, in noise."""
    g = np.stack(np.meshgrid(*[np.arange(size) - size / 2 + 0.5] * 3, indexing="ij"), -1)
    out = rng.normal(0.1, 0.03, (n, size, size, size)).astype(np.float32)
    for k in range(n):
        r = rng.uniform(2.0, 3.5)
        if kind == "ball":
            inside = np.linalg.norm(g, axis=-1) <= r
        else:
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            inside = np.linalg.norm(g - (g @ axis)[..., None] * axis, axis=-1) <= r * 0.6
        out[k][inside] = 0.75
    return out
