"""``lunglesionai.synth``: a procedural chest-CT phantom with exact ground truth.

The project's embedded default input: body, ribs, spine, mediastinum and heart, two lungs with branching and
tapering vessel trees and bronchi, and nodules of every texture (solid, part-solid, ground-glass), attachment
(isolated, juxta-pleural, juxta-vascular) and shape (round, lobulated, spiculated), rendered with partial volume
and spatially correlated noise; optionally infection-like patchy ground glass and consolidation (not nodules,
``PhantomConfig(ground_glass_patches=…, consolidations=…)``, ``Phantom.opacities``). Deterministic per seed.

Example:
    >>> from lunglesionai.synth import PhantomConfig, make_phantom
    >>> phantom = make_phantom(PhantomConfig.small(seed=1))
    >>> phantom.volume.hu.shape
    (100, 160, 160)
"""

from .config import PhantomConfig
from .nodule_shapes import ATTACHMENTS, SHAPES, TEXTURES
from .nodules import NoduleTruth
from .opacities import OpacityTruth
from .phantom import Phantom, make_phantom
from .vessels import VesselTree

__all__ = ["PhantomConfig", "Phantom", "NoduleTruth", "OpacityTruth", "VesselTree", "make_phantom", "TEXTURES",
           "ATTACHMENTS", "SHAPES"]
