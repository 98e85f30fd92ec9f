"""Emphysema index of a chest CT: the percentage of lung voxels below −950 HU (LAA-950, "density mask").

LAA-950 (low-attenuation area below −950 HU) on inspiratory CT matched the extent of emphysema measured on
microscopic morphometry best among the thresholds Gevenois et al. compared ("Comparison of computed density and
microscopic morphometry in pulmonary emphysema", Am J Respir Crit Care Med 154(1):187-192, 1996,
doi:10.1164/ajrccm.154.1.8680679). In 573 chest CT examinations of subjects with and without airway
obstruction, the thresholds best correlated with lung function lay between −925 and −965 HU, only slightly
better than −950 HU, which the authors kept as acceptable (Wang et al., "Optimal threshold in CT quantification
of emphysema", Eur Radiol 23(4):975-984, 2013, doi:10.1007/s00330-012-2683-z); on low-dose CT, Cao, Jin, Tan
and Guo ("Optimal threshold in low-dose CT quantification of emphysema") found −940 HU best in a Chinese
population. The threshold therefore depends on dose, scanner and population; −950 HU is the common convention.

What biases it, so read it as an approximate, scan-dependent number, not a diagnosis of emphysema:

* noise: low dose and sharp (lung) kernels widen the HU histogram and push normal lung below −950 HU (over-
  estimate); iterative reconstruction and denoising lower it;
* smooth kernels and thick slices average small low-attenuation areas with the surrounding tissue and
  under-estimate it; depth of inspiration changes it (expiration lowers it);
* the lung mask (:func:`lunglesionai.stages.lung_mask.segment_lungs`) includes vessels and the smaller airways
  (their lumen counts as low-attenuation) and excludes the trachea and main bronchi; it is the analysed volume's
  mask, so a scan that cuts the lungs gives the index of the part scanned.
"""

from __future__ import annotations

import numpy as np

from lunglesionai.core.volume import Volume

__all__ = ["EMPHYSEMA_MAX_HU", "emphysema_index_pct"]

#: Lung voxels strictly below this HU count as low-attenuation (emphysema-like): LAA-950.
EMPHYSEMA_MAX_HU = -950.0


def emphysema_index_pct(volume: Volume, lung_labels: np.ndarray) -> float | None:
    """Percentage (0-100) of lung voxels below :data:`EMPHYSEMA_MAX_HU` (LAA-950, Gevenois et al. 1996).

    Args:
        volume: CT in HU (any orientation; voxels are counted, so spacing does not matter).
        lung_labels: (Z, Y, X) lung labels or boolean mask on ``volume``'s grid; every non-zero voxel is lung.

    Returns:
        The unrounded percentage, or None when the mask holds no voxel (no lung: not measured).

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.

    Example:
        >>> import numpy as np
        >>> hu = np.full((2, 2, 2), -870.0, np.float32); hu[0, 0, :] = -980.0
        >>> vol = Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        >>> emphysema_index_pct(vol, np.ones((2, 2, 2), np.uint8))
        25.0
    """
    labels = np.asarray(lung_labels)
    if tuple(labels.shape) != tuple(volume.shape_zyx):
        raise ValueError(f"lung labels of shape {labels.shape} are not on the volume's grid {volume.shape_zyx}")
    lung = labels != 0
    n_lung = int(np.count_nonzero(lung))
    if n_lung == 0:
        return None
    n_low = int(np.count_nonzero(np.asarray(volume.hu)[lung] < EMPHYSEMA_MAX_HU))
    return 100.0 * n_low / n_lung
