"""lunglesionai: lung nodule and lesion analysis of chest CT, the engine of the LungLesionAI 3D Slicer extension.

Conventions: arrays are (z, y, x) = (k, j, i); spacing and world points are (x, y, z) in mm, world space is LPS;
intensities are Hounsfield units. Only :mod:`lunglesionai.mrml` imports ``slicer`` (lazily); nothing imports Qt.
"""

from .findings import NOT_RUN, STAGES, Finding, FindingMask, InputInfo, Report
from .volume import Volume

__version__ = "0.1.0"

__all__ = ["__version__", "Volume", "Finding", "FindingMask", "InputInfo", "Report", "STAGES", "NOT_RUN"]
