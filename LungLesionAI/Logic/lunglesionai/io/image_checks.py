"""Header checks of NIfTI, NRRD and MetaImage files before SimpleITK reads their voxels.

SimpleITK reads a truncated file without complaint in several cases (the missing voxels come back as 0 HU, a
half ``.nii.gz`` included), replaces a zero NIfTI voxel size by 1 mm, ignores a NaN ``scl_slope``, and its NIfTI
reader (niftilib's ``nifti_read_buffer``) turns NaN and infinite float voxels into 0. So the loader first
parses the header itself and compares the data size it declares with what the file holds:

The parts: :mod:`lunglesionai.io.nifti_header`, :mod:`lunglesionai.io.nrrd_header`,
:mod:`lunglesionai.io.metaimage_header` (header parsing) and :mod:`lunglesionai.io.declared_data` (the size check).

* :func:`read_declared_data` parses the header (NIfTI-1/-2 with numpy/struct, NRRD with ``nrrd.read_header``,
  MetaImage ``key = value`` lines) and refuses malformed fields (magic, datatype/bitpix, dimensions, voxel
  offset, voxel size, scaling); it reads the header only.
* :func:`check_declared_data` then checks that the data are all there: the file length for raw data, or the
  whole compressed stream decompressed in chunks of :data:`CHUNK_BYTES` (constant memory), which also finds a
  corrupt or truncated gzip/zlib stream; float NIfTI data are scanned for NaN/Inf on the way.

Formats followed: the NIfTI-1 header (``nifti1.h``, 348 bytes) and NIfTI-2 (``nifti2.h``, 540 bytes); NRRD0001-
NRRD0005 (teem's "NRRD file format", fields ``type``, ``dimension``, ``sizes``, ``encoding``, ``data file``,
``line skip``, ``byte skip``, ``space directions``, ``spacings``); MetaIO (ITK's MetaImage: ``NDims``,
``DimSize``, ``ElementType``, ``ElementNumberOfChannels``, ``ElementSpacing``, ``HeaderSize``,
``CompressedData``, ``CompressedDataSize``, ``ElementDataFile``). Every refusal raises
:class:`~lunglesionai.core.ct_checks.CTInputError` with one line that starts with the file's path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lunglesionai.io.declared_data import CHUNK_BYTES, DeclaredData, check_declared_data
from lunglesionai.io.metaimage_header import read_metaimage_header
from lunglesionai.io.nifti_header import read_nifti_header
from lunglesionai.io.nrrd_header import read_nrrd_header

__all__ = [  # the parts' public names are re-exported: this module is the entry point of the header checks
    "CHUNK_BYTES",
    "DeclaredData",
    "check_declared_data",
    "check_image_file",
    "read_declared_data",
    "read_metaimage_header",
    "read_nifti_header",
    "read_nrrd_header",
]



def check_image_file(path: str | os.PathLike) -> Optional[DeclaredData]:
    """Parse the header of a NIfTI/NRRD/MetaImage file and check that all its declared voxel data are there.

    :func:`read_declared_data` followed by :func:`check_declared_data`; the loader calls the two separately
    (ITK's header read and the memory check go in between).

    Args:
        path: a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file.

    Returns:
        What the header declares, or None for another suffix (or a layout not checked, e.g. ASCII data).

    Raises:
        CTInputError: malformed header, or data missing or corrupt (see the two functions).
    """
    declared = read_declared_data(path)
    if declared is not None:
        check_declared_data(path, declared)
    return declared


def read_declared_data(path: str | os.PathLike) -> Optional[DeclaredData]:
    """Parse the header of a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) file.

    Only the header is read (for .nii.gz, the first 540 decompressed bytes). The fields the data layout depends
    on are checked, the voxel size with :func:`~lunglesionai.core.ct_checks.check_spacing`.

    Args:
        path: the image file.

    Returns:
        The declared data layout, or None when the suffix is none of the above or the layout is one this module
        does not check (NRRD/MetaImage ASCII, hex or bzip2 data, or data split over a list of files).

    Raises:
        CTInputError: bad magic or sizeof_hdr, unknown or non-scalar datatype, bitpix not matching the datatype,
            a dimension zero or negative, voxel offset negative or not finite, voxel size zero, negative or
            NaN, NaN/Inf ``scl_slope``/``scl_inter``, an unparsable NRRD/MetaIO header, or a missing data file.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti_header(p)
    if name.endswith((".nrrd", ".nhdr")):
        return read_nrrd_header(p)
    if name.endswith((".mha", ".mhd")):
        return read_metaimage_header(p)
    return None
