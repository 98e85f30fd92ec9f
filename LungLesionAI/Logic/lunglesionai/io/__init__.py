"""Reading CTs (NIfTI, NRRD, MetaImage, DICOM series and files) and writing the analysis outputs (seg.nrrd,
mrk.json, report.json, report.html).

The CT reader's public names are re-exported here: ``from lunglesionai.io import load_volume, save_volume``.
"""

from lunglesionai.core.ct_checks import CTInputError
from lunglesionai.core.sitk_bridge import volume_from_sitk, volume_to_sitk
from lunglesionai.io.ct_files import MIN_SLICES, load_volume, save_volume
from lunglesionai.io.dicom_series import DicomSeriesInfo, list_dicom_series

__all__ = ["CTInputError", "DicomSeriesInfo", "MIN_SLICES", "list_dicom_series", "load_volume", "save_volume",
           "volume_from_sitk", "volume_to_sitk"]
