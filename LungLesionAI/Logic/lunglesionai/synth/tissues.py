"""Tissue intensities of the phantom (Hounsfield units), named once and used everywhere.

Values follow textbook CT numbers (e.g. Hofer, *CT Teaching Manual*, 4th ed., Thieme 2010, table 1.1): air −1000,
fat −100 to −80, soft tissue/muscle 40, liver 55–65, unenhanced blood 40, cancellous bone ~250, cortical bone
700 and more, aerated lung −900 to −800.
"""

from __future__ import annotations

__all__ = [
    "AIR_HU",
    "FAT_HU",
    "MEDIASTINAL_FAT_HU",
    "MUSCLE_HU",
    "SOFT_TISSUE_HU",
    "BLOOD_HU",
    "LIVER_HU",
    "SPLEEN_HU",
    "CSF_HU",
    "DISC_HU",
    "CORTICAL_BONE_HU",
    "MARROW_HU",
    "LUNG_HU",
    "LUNG_GRAVITY_GRADIENT_HU",
    "LUNG_TEXTURE_SIGMA_HU",
    "AIRWAY_WALL_HU",
    "HU_CLIP",
]

AIR_HU = -1000.0
FAT_HU = -100.0
MEDIASTINAL_FAT_HU = -90.0
MUSCLE_HU = 45.0
SOFT_TISSUE_HU = 40.0
BLOOD_HU = 40.0
LIVER_HU = 58.0
SPLEEN_HU = 48.0
CSF_HU = 10.0
DISC_HU = 85.0
CORTICAL_BONE_HU = 750.0
MARROW_HU = 250.0
#: Mean aerated lung parenchyma.
LUNG_HU = -850.0
#: Dependent (posterior) lung is denser: HU added at the posterior edge, subtracted at the anterior edge.
LUNG_GRAVITY_GRADIENT_HU = 25.0
#: Standard deviation of the low-frequency parenchymal texture.
LUNG_TEXTURE_SIGMA_HU = 18.0
AIRWAY_WALL_HU = 40.0
#: The range a CT scanner stores (12-bit plus offset).
HU_CLIP = (-1024.0, 3071.0)
