"""lunglesionai: lung nodule and lesion analysis of chest CT, the engine of the LungLesionAI 3D Slicer extension.

Conventions: arrays are (z, y, x) = (k, j, i); spacing and world points are (x, y, z) in mm, world space is LPS;
intensities are Hounsfield units. Only :mod:`lunglesionai.mrml` imports ``slicer`` (lazily); nothing imports Qt.

The package is in layers (:mod:`lunglesionai.core.layers` is the table; imports only run downward): ``core`` (data
model, geometry, checks, vocabulary) ← ``io``, ``nets``, ``synth``, ``datasets`` ← ``stages`` ← ``pipeline``,
``datagen`` ← ``clinical`` ← ``mrml``, ``evaluation`` ← ``training`` ← ``app`` (command line, background runner).

This file imports nothing but the standard library, so that the Slicer panel can read
:mod:`lunglesionai.core.vocabulary` before numpy or torch are installed; the data-model names below are loaded on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public names re-exported here, and the module that defines each.
_LAZY = {
    "Volume": "lunglesionai.core.volume",
    "Finding": "lunglesionai.core.findings",
    "FindingMask": "lunglesionai.core.findings",
    "InputInfo": "lunglesionai.core.findings",
    "Report": "lunglesionai.core.findings",
    "STAGES": "lunglesionai.core.vocabulary",
    "NOT_RUN": "lunglesionai.core.vocabulary",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """``lunglesionai.Volume`` and the other names of :data:`_LAZY`, imported on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lunglesionai' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
