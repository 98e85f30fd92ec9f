"""Tests of the image-file checks (issue 12 "accept no broken scan", image-file part).

Every case is a small generated file (16×16×12 voxels written by SimpleITK, then bytes mutated; sparse files
for huge headers) that :func:`lunglesionai.io.ct_files.load_volume` must refuse with a one-line CTInputError naming the
file and the problem, and that ``lunglesionai analyze`` must refuse with exit status 2, one line on stderr and
no output folder. Real CTs from ../shared must still load (skipped when absent).
"""

from __future__ import annotations

import gzip
import re
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_path
from lunglesionai.app.cli import main
from lunglesionai.core.ct_checks import _check_hu_range, check_hu_plausible
from lunglesionai.core.volume import Volume
from lunglesionai.io.ct_files import CTInputError, load_volume
from lunglesionai.io.image_checks import read_declared_data

SHAPE = (12, 16, 16)  # z, y, x
SPACING = (0.8, 0.8, 2.5)  # x, y, z mm
# NIfTI-1 header fields (nifti1.h byte offsets, little-endian as SimpleITK writes them)
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET, SCL_SLOPE, SCL_INTER, MAGIC = 40, 70, 72, 76, 108, 112, 116, 344


# ------------------------------------------------------------------------------------------------ helpers


def ct_array(shape=SHAPE, seed=0, padding: float | None = None) -> np.ndarray:
    """A CT-like int16 volume in HU: air (-1000) around an elliptic body (40), two lungs (-850), noise;
    ``padding``: value outside the circular field of view (as scanners store it)."""
    rng = np.random.default_rng(seed)
    _, y, x = np.indices(shape, dtype=float)
    cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
    hu = np.full(shape, -1000.0)
    hu[((y - cy) / (0.45 * shape[1])) ** 2 + ((x - cx) / (0.45 * shape[2])) ** 2 <= 1] = 40.0
    hu[((y - cy) / (0.3 * shape[1])) ** 2 + ((np.abs(x - cx) - 0.2 * shape[2]) / (0.13 * shape[2])) ** 2 <= 1] = -850
    hu += rng.normal(0, 15, shape)
    if padding is not None:
        hu[(y - cy) ** 2 + (x - cx) ** 2 > (shape[2] / 2) ** 2] = padding
    return np.rint(hu).astype(np.int16)


def write(path: Path, array: np.ndarray | None = None, spacing=SPACING, compress: bool = False) -> Path:
    """``array`` (z, y, x; default :func:`ct_array`) written by SimpleITK."""
    image = sitk.GetImageFromArray(ct_array() if array is None else array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), compress)
    return path


def nifti(tmp_path: Path, suffix: str = ".nii", array: np.ndarray | None = None, name: str = "ct") -> Path:
    return write(tmp_path / f"{name}{suffix}", array, compress=suffix.endswith(".gz"))


def edit_nifti(path: Path, edits: dict[int, tuple[str, object]]) -> Path:
    """Overwrite header fields ``{offset: (struct format, value)}`` of a .nii or .nii.gz, data untouched."""
    gz = path.name.endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    for offset, (fmt, value) in edits.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        struct.pack_into("<" + fmt, data, offset, *values)
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    return path


def cut(path: Path, n_bytes: int) -> Path:
    """Drop the last ``n_bytes`` of a file (an interrupted copy or download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n_bytes])
    return path


def assert_refused(path: Path, capsys, *words: str, cli_args: tuple[str, ...] = (), **load_kwargs) -> str:
    """load_volume and ``lunglesionai analyze`` both refuse ``path`` with one line naming it and ``words``."""
    with pytest.raises(CTInputError) as err:
        load_volume(path, **load_kwargs)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path.resolve())), message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    out = path.parent / "out"
    code = main(["analyze", str(path), "-o", str(out), *cli_args])
    stderr = capsys.readouterr().err.strip()
    assert code == 2, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("lunglesionai: error: "), stderr
    assert str(path.resolve()) in stderr and all(w.lower() in stderr.lower() for w in words), stderr
    assert not out.exists()
    return message


# ------------------------------------------------------------------------------------- NIfTI header, data


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_half_a_nifti_is_refused(tmp_path, capsys, suffix):
    path = nifti(tmp_path, suffix)
    cut(path, path.stat().st_size // 2)
    assert_refused(path, capsys, "truncated")


def test_nifti_missing_last_bytes_names_how_many(tmp_path, capsys):
    path = cut(nifti(tmp_path), 100)
    assert_refused(path, capsys, "truncated", "16×16×12 int16", "100 missing")


def test_valid_gzip_holding_a_short_nifti_is_refused(tmp_path, capsys):
    raw = nifti(tmp_path).read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:-1000]))  # a complete gzip stream, but 1000 voxel bytes missing
    assert_refused(path, capsys, "truncated", "decompressed data", "1000 missing")


def test_corrupt_gzip_is_refused(tmp_path, capsys):
    path = nifti(tmp_path, ".nii.gz")
    data = bytearray(path.read_bytes())
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])  # CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))
    assert_refused(path, capsys, "corrupt gzip")


@pytest.mark.parametrize(
    "edits, words",
    [
        ({MAGIC: ("4s", b"xyz\0")}, ["magic", "n+1"]),
        ({0: ("i", 347)}, ["sizeof_hdr", "347"]),
        ({BITPIX: ("h", 8)}, ["bitpix", "datatype 4"]),
        ({DATATYPE: ("h", 16)}, ["bitpix", "float32"]),
        ({DATATYPE: ("h", 32), BITPIX: ("h", 64)}, ["datatype 32", "complex64"]),
        ({DATATYPE: ("h", 99)}, ["datatype 99"]),
        ({DIM + 4: ("h", 0)}, ["dimensions", "[16, 0, 12]"]),
        ({DIM + 6: ("h", -12)}, ["dimensions", "-12"]),
        ({DIM: ("h", 9)}, ["dim[0] = 9"]),
        ({VOX_OFFSET: ("f", -16.0)}, ["vox_offset"]),
        ({VOX_OFFSET: ("f", float("nan"))}, ["vox_offset"]),
    ],
    ids=["magic", "sizeof_hdr", "bitpix", "datatype-vs-bitpix", "complex", "unknown-datatype", "zero-dim",
         "negative-dim", "dim0", "negative-vox_offset", "nan-vox_offset"],
)
def test_corrupt_nifti_header_is_refused(tmp_path, capsys, edits, words):
    path = edit_nifti(nifti(tmp_path, ".nii.gz"), edits)
    assert_refused(path, capsys, "NIfTI", *words)


@pytest.mark.parametrize("suffix, words", [(".nii", ["vox_offset", "beyond the end"]),
                                           (".nii.gz", ["truncated", "vox_offset"])])
def test_vox_offset_beyond_the_file_is_refused(tmp_path, capsys, suffix, words):
    path = edit_nifti(nifti(tmp_path, suffix), {VOX_OFFSET: ("f", 1_000_000.0)})
    assert_refused(path, capsys, *words)


@pytest.mark.parametrize("index, value", [(1, 0.0), (2, -0.8), (3, float("nan")), (3, 0.0)],
                         ids=["zero-x", "negative-y", "nan-z", "zero-z"])
def test_bad_nifti_voxel_size_is_refused(tmp_path, capsys, index, value):
    # ITK would read a zero or NaN pixdim as 1 mm and a negative one as its absolute value
    path = edit_nifti(nifti(tmp_path, ".nii.gz"), {PIXDIM + 4 * index: ("f", value)})
    assert_refused(path, capsys, "implausible voxel spacing", f"{value:g}")


def test_non_finite_nifti_scaling_is_refused_zero_slope_is_not(tmp_path, capsys):
    for offset, value in [(SCL_SLOPE, float("nan")), (SCL_SLOPE, float("inf")), (SCL_INTER, float("-inf"))]:
        path = edit_nifti(nifti(tmp_path, ".nii", name=f"scl{offset}{value}"), {offset: ("f", value)})
        assert_refused(path, capsys, "scl_slope", "scl_inter")
    zero_slope = edit_nifti(nifti(tmp_path, ".nii", name="slope0"), {SCL_SLOPE: ("f", 0.0)})
    assert np.array_equal(load_volume(zero_slope).hu, ct_array())  # slope 0: "no scaling" (nifti1.h)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_nan_and_inf_voxels_are_refused(tmp_path, capsys, suffix):
    data = ct_array().astype(np.float32)
    data[3, 4, 5], data[6, 7, 8] = np.nan, np.inf  # ITK's NIfTI reader would return 0 HU for both
    path = write(tmp_path / f"ct{suffix}", data, compress=suffix.endswith(".gz"))
    assert_refused(path, capsys, "2", "NaN or infinite")


# --------------------------------------------------------------------------------------------- huge headers


def nifti_header(size_xyz, vox_offset: float = 352.0) -> bytes:
    """A NIfTI-1 int16 header (348 bytes + 4-byte extension flag), 1 mm voxels, no data."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, DIM, 3, *size_xyz, 1, 1, 1, 1)
    struct.pack_into("<2h", header, DATATYPE, 4, 16)
    struct.pack_into("<8f", header, PIXDIM, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<3f", header, VOX_OFFSET, vox_offset, 1.0, 0.0)
    header[MAGIC:MAGIC + 4] = b"n+1\0"
    return bytes(header)


@pytest.mark.parametrize("n", [1000, 2000])
@pytest.mark.parametrize("layout", ["short", "sparse-1-byte-short", "gzip"])
def test_huge_declared_volume_is_refused_before_its_voxels_are_read(tmp_path, capsys, n, layout):
    path = tmp_path / ("huge.nii.gz" if layout == "gzip" else "huge.nii")
    header = nifti_header((n, n, n))
    if layout == "gzip":
        path.write_bytes(gzip.compress(header + bytes(4096)))
    else:
        path.write_bytes(header + bytes(4096))
        if layout.startswith("sparse"):
            with open(path, "r+b") as f:
                f.truncate(352 + 2 * n**3 - 1)  # sparse: no disk space used
    tracemalloc.start()
    start = time.perf_counter()
    words = ["truncated", f"{n}×{n}×{n} int16", "1 missing" if layout.startswith("sparse") else "missing"]
    with pytest.raises(CTInputError) as err:
        load_volume(path, max_memory_gb=1e9)  # budget high enough that only the data check can refuse it
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2.0 and peak < 20e6, (elapsed, peak)  # nothing of the declared 2-16 GB was read
    assert all(w in str(err.value) for w in words), str(err.value)
    assert_refused(path, capsys, *words, cli_args=("--max-memory-gb", "1e9"), max_memory_gb=1e9)


# ------------------------------------------------------------------------------------------ NRRD, MetaImage


def nrrd_header_edit(path: Path, pattern: str, replacement: str) -> Path:
    data = path.read_bytes()
    end = data.index(b"\n\n") + 2
    header = re.sub(pattern, replacement, data[:end].decode())
    path.write_bytes(header.encode() + data[end:])
    return path


@pytest.mark.parametrize(
    "name, compress, words",
    [("ct.nrrd", False, ["NRRD header declares 16×16×12 short", "100 missing"]),
     ("ct.nrrd", True, ["truncated gzip data"]),
     ("ct.nhdr", False, ["NRRD", "data file ct.raw", "100 missing"])],
)
def test_truncated_nrrd_is_refused(tmp_path, capsys, name, compress, words):
    path = write(tmp_path / name, compress=compress)
    data_file = tmp_path / "ct.raw" if name.endswith(".nhdr") else path
    header_end = data_file.read_bytes().index(b"\n\n") + 2 if compress else 0
    cut(data_file, (data_file.stat().st_size - header_end) // 2 if compress else 100)  # gzip: half the stream
    assert_refused(path, capsys, "truncated", *words)


@pytest.mark.parametrize(
    "pattern, replacement, words",
    [
        (r"sizes: 16 16 12", "sizes: 16 0 12", ["sizes", "[16, 0, 12]"]),
        (r"type: short", "type: block", ["unsupported or missing NRRD type", "block"]),
        (r"space directions: \([^)]*\)", "space directions: (0,0,0)", ["implausible voxel spacing", "0, 0.8"]),
    ],
    ids=["zero-size", "block-type", "zero-space-direction"],
)
def test_corrupt_nrrd_header_is_refused(tmp_path, capsys, pattern, replacement, words):
    path = nrrd_header_edit(write(tmp_path / "ct.nrrd"), pattern, replacement)
    assert_refused(path, capsys, *words)


def test_nhdr_without_its_data_file_is_refused(tmp_path, capsys):
    path = write(tmp_path / "ct.nhdr")
    (tmp_path / "ct.raw").unlink()
    assert_refused(path, capsys, "data file", "ct.raw", "does not exist")


def metaimage_edit(path: Path, key: str, value: str) -> Path:
    data = path.read_bytes()
    path.write_bytes(re.sub(rb"(?m)^" + key.encode() + rb" = [^\n]*", f"{key} = {value}".encode(), data, count=1))
    return path


@pytest.mark.parametrize("name, compress, words", [("ct.mha", False, ["truncated", "MetaImage", "100 missing"]),
                                                   ("ct.mha", True, ["truncated", "CompressedDataSize"]),
                                                   ("ct.mhd", False, ["truncated", "MetaImage", "ct.raw"])])
def test_truncated_metaimage_is_refused(tmp_path, capsys, name, compress, words):
    path = write(tmp_path / name, compress=compress)
    cut(tmp_path / "ct.raw" if name.endswith(".mhd") else path, 100)
    assert_refused(path, capsys, *words)


def test_compressed_metaimage_with_a_short_zlib_stream_is_refused(tmp_path, capsys):
    path = write(tmp_path / "ct.mha", compress=True)
    data = path.read_bytes()
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    short = zlib.compress(zlib.decompress(data[start:])[:-200])  # a valid stream 200 bytes too short
    path.write_bytes(re.sub(rb"CompressedDataSize = \d+", f"CompressedDataSize = {len(short)}".encode(),
                            data[:start]) + short)
    assert_refused(path, capsys, "truncated", "decompressed data", "200 missing")


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_negative_metaimage_spacing_is_refused(tmp_path, capsys, suffix):
    # ITK would silently use 0.8 mm for -0.8
    path = metaimage_edit(write(tmp_path / f"ct{suffix}"), "ElementSpacing", "-0.8 0.8 2.5")
    assert_refused(path, capsys, "implausible voxel spacing", "-0.8")


# ----------------------------------------------------------------------------------------- HU plausibility


@pytest.mark.parametrize("thickness_mm", [3.0, 5.0, 10.0])
def test_scaled_hu_is_refused_at_any_slice_thickness(tmp_path, capsys, thickness_mm):
    spacing = (0.8, 0.8, thickness_mm)
    good = write(tmp_path / "ct.nii.gz", ct_array(padding=-3024), spacing, compress=True)
    vol = load_volume(good)  # thick slices and a -3024 padding are fine
    assert vol.spacing_mm[2] == pytest.approx(thickness_mm)
    scaled = write(tmp_path / "x10.nii.gz", ct_array() * 10, spacing, compress=True)
    assert_refused(scaled, capsys, "far below air", "×10")


@pytest.mark.parametrize("padding", [-2000, -3024])
def test_raw_values_with_padding_are_refused(tmp_path, capsys, padding):
    raw = ct_array() + 1024  # stored values without the -1024 rescale intercept...
    raw[ct_array(padding=-9999) == -9999] = padding  # ...and the scanner's padding outside the field of view
    assert raw.min() == padding  # the old rule (minimum < -500) let this through
    path = write(tmp_path / "raw.nrrd", raw.astype(np.int16))
    assert_refused(path, capsys, "no air or lung", f"{padding} HU padding", "-1024")


def test_raw_tissue_with_some_air_is_refused_by_its_median(tmp_path, capsys):
    rng = np.random.default_rng(1)
    raw = np.rint(rng.normal(1060, 20, SHAPE)).astype(np.int16)  # soft tissue without the -1024 offset
    raw.reshape(-1)[::8] = rng.integers(-1010, -990, raw.size // 8)  # 12.5 % air
    path = write(tmp_path / "raw.mha", raw)
    assert_refused(path, capsys, "median", "-1024 HU offset")


def test_lung_only_crop_and_clamped_air_pass_but_raw_crop_does_not(tmp_path, capsys):
    rng = np.random.default_rng(2)
    lung = np.rint(rng.normal(-850, 40, SHAPE)).astype(np.int16)
    lung[:, 6:9, 6:9] = 40  # a vessel
    clamped = np.maximum(ct_array(), -1024)
    clamped[ct_array(padding=-9999) == -9999] = -1024  # outside air clamped at one value
    for name, array in [("lung.nii", lung), ("clamped.nii", clamped)]:
        assert load_volume(write(tmp_path / name, array)).shape_zyx == SHAPE
    message = assert_refused(write(tmp_path / "raw_lung.nii", lung + 1024), capsys, "no air or lung", "-1024 HU")
    assert "pass check_hu" not in message  # no Python-only advice for command-line users


def test_dicom_hu_check_keeps_its_name_and_uses_the_new_rules():
    raw = (ct_array(padding=-9999) + 1024).astype(np.int16)
    raw[raw == -9999 + 1024] = -3024
    with pytest.raises(CTInputError, match=r"^raw series: .*-3024 HU padding.*no air or lung"):
        _check_hu_range(Volume(raw, SPACING, (0, 0, 0), source="raw series"))
    _check_hu_range(Volume(ct_array(padding=-3024), SPACING, (0, 0, 0), source="ct"))
    with pytest.raises(CTInputError, match="every voxel is -1000"):
        check_hu_plausible("blank", np.full(SHAPE, -1000, np.int16))


# ------------------------------------------------------------------------------------- property-style test


_VALID_TYPES = {2: 8, 4: 16, 8: 32, 16: 32, 64: 64, 256: 8, 512: 16, 768: 32, 1024: 64, 1280: 64}


def _mutation(rng: np.random.Generator, size: int) -> tuple[str, dict]:
    """One header mutation that a loader must refuse, with its (offset: (format, value)) edits or a cut."""
    kind = rng.choice(["dim-larger", "dim-nonpositive", "datatype", "bitpix", "vox_offset", "magic", "cut",
                       "pixdim", "scaling", "sizeof_hdr"])
    axis = int(rng.integers(1, 4))
    if kind == "dim-larger":
        return kind, {DIM + 2 * axis: ("h", int(SHAPE[::-1][axis - 1] + rng.integers(1, 5)))}
    if kind == "dim-nonpositive":
        return kind, {DIM + 2 * axis: ("h", int(rng.choice([0, -1, -16])))}
    if kind == "datatype":
        return kind, {DATATYPE: ("h", int(rng.choice([c for c, bits in _VALID_TYPES.items() if bits != 16])))}
    if kind == "bitpix":
        return kind, {BITPIX: ("h", int(rng.choice([0, 7, 8, 32, 64, -16])))}
    if kind == "vox_offset":
        return kind, {VOX_OFFSET: ("f", float(size + rng.integers(1, 1_000_000)))}
    if kind == "magic":
        return kind, {MAGIC: ("4s", bytes(rng.integers(ord("a"), ord("z") + 1, 3).astype(np.uint8)) + b"\0")}
    if kind == "cut":
        return kind, {"cut": int(rng.integers(1, size - 352))}
    if kind == "pixdim":
        return kind, {PIXDIM + 4 * axis: ("f", float(rng.choice([0.0, -1.5, np.nan])))}
    if kind == "scaling":
        return kind, {int(rng.choice([SCL_SLOPE, SCL_INTER])): ("f", float(rng.choice([np.nan, np.inf, -np.inf])))}
    return kind, {0: ("i", int(rng.choice([0, 1, 347, 349, 541, -348])))}


def test_random_header_mutations_are_never_accepted(tmp_path, capsys):
    rng = np.random.default_rng(20240612)
    reference = nifti(tmp_path, ".nii", name="reference")
    assert np.array_equal(load_volume(reference).hu, ct_array())  # the unmutated file loads
    size = reference.stat().st_size
    for case in range(30):
        suffix = ".nii.gz" if case % 2 else ".nii"
        kind, edits = _mutation(rng, size)
        path = nifti(tmp_path, suffix, name=f"case{case}-{kind}")
        if "cut" in edits:
            data = gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes()
            data = data[: len(data) - edits["cut"]]
            path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" else data)
        else:
            edit_nifti(path, edits)
        out = tmp_path / f"out{case}"
        code = main(["analyze", str(path), "-o", str(out)])
        stderr = capsys.readouterr().err.strip()
        assert code == 2 and len(stderr.splitlines()) == 1 and path.name in stderr, (case, kind, edits, stderr)
        assert not out.exists()


# ------------------------------------------------------------------------------------------------ real CTs


REAL_CTS = [
    ("ct", "chest_ct_crop_1p5mm.nii.gz"),
    ("ct", "chest_ct_lowres.nrrd"),
    ("ct", "pancreas_ct_abdomen.nii.gz"),
    ("ct", "tcga_thca_whole_body_ct.nii.gz"),
    ("ct", "abdomen_lung_base_dicom"),
    ("lidc_slabs", "LIDC-IDRI-0001"),
    ("lidc_slabs", "LIDC-IDRI-0002"),
    ("lidc_voi", "images", "LIDC-IDRI-0001_R_1.nii.gz"),
    ("lidc_voi", "images", "LIDC-IDRI-0044_R_3.nii.gz"),
    ("lidc_voi", "images", "LIDC-IDRI-0057_R_1.nii.gz"),
    ("lidc_voi", "images", "LIDC-IDRI-0066_R_2.nii.gz"),
    ("lidc_voi", "images", "LIDC-IDRI-0082_R_1.nii.gz"),
    ("lidc_voi", "images", "LIDC-IDRI-0655_R_2.nii.gz"),
]


@pytest.mark.parametrize("parts", REAL_CTS, ids=[p[-1] for p in REAL_CTS])
def test_real_ct_passes_every_check(parts):
    path = shared_path(*parts)
    vol = load_volume(path)  # header, data length, finite values and HU plausibility all checked
    assert min(vol.shape_zyx) >= 10 and vol.hu.min() <= -500
    if not path.is_dir():
        declared = read_declared_data(path)
        assert declared.size == vol.shape_zyx[::-1] and declared.n_bytes >= vol.hu.size
