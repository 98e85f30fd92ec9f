"""Tests of lunglesionai.io.dicom_checks through load_volume and the CLI: no broken DICOM input is accepted.

Each case is a tiny DICOM series (12 slices of 16×16, written by pydicom in dicom_fixtures) made broken in one
way that GDCM reads without a word today: a broken or looping symbolic link, a FIFO, a damaged or truncated
member, corrupt RLE frames that GDCM still decodes to garbage, pixel data whose length disagrees with
Rows/Columns, or two reconstructions under one SeriesInstanceUID. Each must end in one CTInputError line that
names the file or folder and the problem, and ``lunglesionai analyze`` must exit 2 with one line on stderr
and write nothing.
"""

from __future__ import annotations

import logging
import os
import random
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import RLELossless

from dicom_fixtures import hu_of_z, write_enhanced_ct, write_series
from lunglesionai.app.cli import EXIT_BAD_INPUT, main
from lunglesionai.io import dicom_checks
from lunglesionai.io.ct_files import CTInputError, load_volume
from lunglesionai.io.dicom_series import DicomSeriesInfo

SHAPE = (16, 16)  # GDCM cannot decode RLE frames much smaller than this at all
N_SLICES = 12
SPACING_MM = 2.0


def _series(folder: Path, **kwargs) -> str:
    return write_series(folder, SPACING_MM * np.arange(N_SLICES), shape=SHAPE, **kwargs)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def _refused(path: Path, *needles: str) -> str:
    """load_volume refuses ``path`` with one line that starts with the path and holds every needle."""
    with pytest.raises(CTInputError) as err:
        load_volume(path)
    message = str(err.value)
    assert message.startswith(str(path.resolve())), message
    assert len(message.splitlines()) == 1 and "\x1b" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _cli_refuses(path: Path, tmp_path: Path, capsys, *needles: str) -> str:
    out = tmp_path / "out"
    code = main(["analyze", str(path), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT, err
    assert err.startswith("lunglesionai: error: ") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()
    return err


# ------------------------------------------------------------------------------------------ broken inputs
# Each builder makes one broken input under tmp_path and returns (input path, texts the message must hold).


def _broken_symlink(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    os.symlink(tmp_path / "gone.dcm", folder / "zz_slice.dcm")
    return folder, ["zz_slice.dcm", "broken symbolic link"]


def _symlink_loop(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    os.symlink(folder / "loop_b", folder / "loop_a")
    os.symlink(folder / "loop_a", folder / "loop_b")
    return folder, ["loop_a (symbolic link loop)", "loop_b (symbolic link loop)"]


def _fifo(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    os.mkfifo(folder / "pipe.dcm")  # opening it would block for ever: the scan must only stat it
    return folder, ["pipe.dcm", "FIFO"]


def _garbage_after_preamble(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    noise = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (folder / "scrambled.dcm").write_bytes(bytes(128) + b"DICM" + noise)
    return folder, ["scrambled.dcm", "damaged"]


def _truncated_in_header(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder, prefix="s")
    top = folder / f"s_{N_SLICES - 1:03d}.dcm"  # the last slice: without it the series still looks complete
    top.write_bytes(top.read_bytes()[:400])
    return folder, [top.name, "damaged or truncated"]


def _truncated_in_pixel_data(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder, prefix="s")
    top = folder / f"s_{N_SLICES - 1:03d}.dcm"
    top.write_bytes(top.read_bytes()[:-100])
    return folder, [top.name]


def _rle_series_with_corrupt_frame(tmp_path: Path, corrupt) -> tuple[Path, Path]:
    folder = tmp_path / "series"
    _series(folder, prefix="s", transfer_syntax=RLELossless)
    target = folder / "s_005.dcm"
    ds = pydicom.dcmread(target)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    ds.PixelData = encapsulate([bytes(corrupt(frame))])
    ds.save_as(target, enforce_file_format=True)
    return folder, target


def _overlong_rle_run(frame: bytearray) -> bytearray:
    """A run header in the middle of the low-byte segment becomes "copy 128 literal bytes": the segment then
    decodes to more bytes than Rows×Columns (pydicom only warns) and the image rows shift (PS3.5 annex G)."""
    n_segments, *offsets = struct.unpack("<16L", frame[:64])
    assert n_segments == 2  # 16-bit: high-byte and low-byte segment
    frame[offsets[1] + (SHAPE[0] // 2) * (SHAPE[1] + 1)] = 0x7F
    return frame


def _short_rle_segment(frame: bytearray) -> bytearray:
    return frame[:-8]  # the low-byte segment decodes to 248 of 256 bytes


def _wrong_rle_segment_count(frame: bytearray) -> bytearray:
    frame[0] = 1  # RLE header: 1 segment, where 16-bit data need 2
    return frame


def _corrupt_rle(corrupt):
    def build(tmp_path: Path):
        folder, target = _rle_series_with_corrupt_frame(tmp_path, corrupt)
        sitk.ReadImage(str(target))  # precondition: GDCM decodes this frame without an error (into garbage)
        return folder, [target.name, "corrupt compressed pixel data", "RLE Lossless"]

    return build


def _set_on_files(folder: Path, which: slice, **tags) -> None:
    for path in _files(folder)[which]:
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)


def _rows_of_one_slice(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    _set_on_files(folder, slice(3, 4), Rows=SHAPE[0] + 1)
    return folder, [_files(folder)[3].name, "PixelData holds 512 bytes", "17×16×1×16/8×1 = 544 bytes"]


def _columns_of_every_slice(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    _set_on_files(folder, slice(None), Columns=SHAPE[1] + 4)
    return folder, ["PixelData holds 512 bytes", "= 640 bytes"]


def _short_pixel_data(tmp_path: Path):
    folder = tmp_path / "series"
    _series(folder)
    path = _files(folder)[0]
    ds = pydicom.dcmread(path)
    _set_on_files(folder, slice(0, 1), PixelData=ds.PixelData[:-32])
    return folder, [path.name, "PixelData holds 480 bytes", "512 bytes"]


def _two_reconstructions(tag: str, value, second_shape=SHAPE, first_number=N_SLICES + 1):
    """Two interleaved stacks under one SeriesInstanceUID, the second offset by half the spacing."""
    def build(tmp_path: Path):
        folder = tmp_path / "series"
        uid = _series(folder, prefix="a", tags={"ConvolutionKernel": "B30f", "ReconstructionDiameter": 350.0})
        second = {"ConvolutionKernel": "B30f", "ReconstructionDiameter": 350.0, **({tag: value} if value else {})}
        write_series(folder, SPACING_MM * np.arange(N_SLICES) + SPACING_MM / 2, shape=second_shape,
                     series_uid=uid, prefix="b", tags=second, first_number=first_number)
        return folder, [tag, "mixes reconstructions", "own folder"]

    return build


BROKEN = {
    "broken-symlink": _broken_symlink,
    "symlink-loop": _symlink_loop,
    "fifo": _fifo,
    "garbage-after-preamble": _garbage_after_preamble,
    "truncated-in-header": _truncated_in_header,
    "truncated-in-pixel-data": _truncated_in_pixel_data,
    "rle-overlong-run": _corrupt_rle(_overlong_rle_run),
    "rle-short-segment": _corrupt_rle(_short_rle_segment),
    "rle-segment-count": _corrupt_rle(_wrong_rle_segment_count),
    "rows-of-one-slice": _rows_of_one_slice,
    "columns-of-every-slice": _columns_of_every_slice,
    "short-pixel-data": _short_pixel_data,
    "two-kernels": _two_reconstructions("ConvolutionKernel", "B70f"),
    "two-slice-thicknesses": _two_reconstructions("SliceThickness", 1.0),
    "two-pixel-spacings": _two_reconstructions("PixelSpacing", [0.6, 0.6]),
    "two-fields-of-view": _two_reconstructions("ReconstructionDiameter", 500.0),
    "two-image-sizes": _two_reconstructions("Rows", None, second_shape=(12, 16)),
    "repeated-instance-numbers": _two_reconstructions("InstanceNumber", None, first_number=1),
}


@pytest.mark.parametrize("build", BROKEN.values(), ids=BROKEN.keys())
def test_broken_dicom_is_refused_with_one_line_naming_it(tmp_path, build):
    path, needles = build(tmp_path)
    _refused(path, *needles)


@pytest.mark.parametrize("build", BROKEN.values(), ids=BROKEN.keys())
def test_cli_refuses_broken_dicom_with_exit_2_and_writes_nothing(tmp_path, build, capsys):
    path, needles = build(tmp_path)
    _cli_refuses(path, tmp_path, capsys, *needles)


def test_interleaved_reconstructions_message_shows_the_values(tmp_path):
    folder, _ = _two_reconstructions("ConvolutionKernel", "B70f\x1b[31m")(tmp_path)
    message = _refused(folder, "ConvolutionKernel differs", "'B30f' in 12 slice(s)", "'B70f?[31m' in 12 slice(s)")
    assert "SliceThickness" not in message and "InstanceNumber" not in message


def test_many_unreadable_members_named_up_to_five(tmp_path):
    folder = tmp_path / "series"
    _series(folder)
    for n in range(8):
        os.symlink(tmp_path / f"gone{n}", folder / f"link{n}.dcm")
    message = _refused(folder, "8 unreadable member(s)", "link0.dcm (broken symbolic link)", "link4.dcm",
                       "and 3 more")
    assert "link5.dcm" not in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without permission")
def test_file_without_read_permission_is_named(tmp_path):
    folder = tmp_path / "series"
    _series(folder)
    locked = _files(folder)[4]
    locked.chmod(0)
    try:
        _refused(folder, locked.name, "no read permission")
    finally:
        locked.chmod(0o644)


def test_permission_denied_is_named_also_when_tests_run_as_root(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "series"
    _series(folder)
    locked = _files(folder)[4]
    real_open = os.open

    def open_(path, flags, *args, **kwargs):  # what a user without read permission meets
        if Path(path).name == locked.name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    _refused(folder, f"{locked.name} (no read permission)")
    _cli_refuses(folder, tmp_path, capsys, locked.name)


def test_multiframe_file_with_wrong_frame_count_is_refused(tmp_path):
    path = tmp_path / "enhanced.dcm"
    write_enhanced_ct(path, 2.0 * np.arange(N_SLICES))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = N_SLICES + 1  # GDCM reads past the end of the pixel data
    ds.save_as(path, enforce_file_format=True)
    _refused(path, "NumberOfFrames", f"= {2 * 6 * 5 * (N_SLICES + 1)} bytes")


# ------------------------------------------------------------------------------------------ header parse errors


@pytest.mark.parametrize("error", [InvalidDicomError("not a DICOM file"), EOFError("unexpected end")],
                         ids=["invalid-dicom", "eof"])
def test_header_parse_error_names_the_file(tmp_path, monkeypatch, capsys, error):
    folder = tmp_path / "series"
    _series(folder)
    bad = _files(folder)[7]
    real_dcmread = pydicom.dcmread

    def dcmread(path, *args, **kwargs):  # pydicom failing on one member that GDCM did list
        if Path(path).name == bad.name:
            raise error
        return real_dcmread(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    _refused(folder, bad.name, "not a readable DICOM file", str(error))
    _cli_refuses(folder, tmp_path, capsys, bad.name)


def test_series_without_preamble_is_refused_by_name(tmp_path, capsys):
    folder = tmp_path / "series"
    _series(folder)
    for path in _files(folder):  # no 128-byte preamble and "DICM": GDCM lists them, ITK cannot read them
        ds = pydicom.dcmread(path)
        ds.preamble = None
        ds.save_as(path, enforce_file_format=False)
        assert path.read_bytes()[128:132] != b"DICM"
    message = _refused(folder, "not a readable DICOM file", "'DICM' prefix is missing")
    assert "force=True" not in message and any(p.name in message for p in _files(folder))
    _cli_refuses(folder, tmp_path, capsys, "not a readable DICOM file")


# ------------------------------------------------------------------------------------------ what stays accepted


def test_clutter_and_non_image_dicom_are_ignored(tmp_path, caplog):
    folder = tmp_path / "series"
    _series(folder)
    (folder / "README.txt").write_text("exported by a PACS\n")
    (folder / "DICOMDIR").write_bytes(b"\0" * 200)  # no preamble: not a DICOM file to us
    (folder / "annotations.xml").write_text("<LidcReadMessage/>")
    (folder / "subfolder").mkdir()
    os.symlink(folder / "subfolder", folder / "link_to_subfolder")
    report = pydicom.dcmread(_files(folder)[0], stop_before_pixels=True)  # a structured report: no image
    for keyword in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(report, keyword)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    report.Modality, report.SeriesInstanceUID = "SR", pydicom.uid.generate_uid()
    report.save_as(folder / "dose_report.dcm", enforce_file_format=True)
    with caplog.at_level(logging.INFO, logger="lunglesionai.io.dicom_checks"):
        volume = load_volume(folder)
    assert volume.shape_zyx == (N_SLICES, *SHAPE)
    np.testing.assert_array_equal(volume.hu[3], hu_of_z(SPACING_MM * 3, SHAPE))
    assert "ignored DICOM file dose_report.dcm (not an image" in caplog.text


def test_corrupt_rle_frame_is_checked_only_where_pydicom_can_decode(tmp_path, monkeypatch, caplog):
    folder, target = _rle_series_with_corrupt_frame(tmp_path, lambda frame: frame)  # clean RLE first
    volume = load_volume(folder)
    np.testing.assert_array_equal(volume.hu[5], hu_of_z(SPACING_MM * 5, SHAPE))
    ds = pydicom.dcmread(target)
    ds.PixelData = encapsulate([bytes(_overlong_rle_run(bytearray(next(generate_frames(ds.PixelData,
                                                                                        number_of_frames=1)))))])
    ds.save_as(target, enforce_file_format=True)
    monkeypatch.setattr(dicom_checks, "_decoder_available", lambda syntax, bits_stored: False)
    with caplog.at_level(logging.INFO, logger="lunglesionai.io.dicom_checks"):
        load_volume(folder)  # no decoder: GDCM's garbage goes through, but the skipped check is logged
    assert "no pydicom decoder for transfer syntax RLE Lossless" in caplog.text
    assert f"decode check of {N_SLICES} compressed file(s) skipped" in caplog.text


# ------------------------------------------------------------------------------------------ messages


def test_escape_codes_in_series_description_never_reach_the_message(tmp_path, capsys):
    folder = tmp_path / "series"
    for n, thickness in enumerate((1.0, 2.0)):
        write_series(folder, thickness * np.arange(N_SLICES), shape=SHAPE, description="\x1b[2J\x1b[31mChest\r\n",
                     prefix=f"s{n}")
    message = _refused(folder, "2 CT series", "'?[2J?[31mChest??'",
                       "choose one with --series-uid UID (Python: series_uid=...)")
    assert "series_uid=:" not in message
    err = _cli_refuses(folder, tmp_path, capsys, "--series-uid UID")
    assert "\x1b" not in err and "\r" not in err


def test_summary_sanitises_every_header_string():
    info = DicomSeriesInfo(uid="1.2\x1b[31m", modality="C\x07T", description="a\nb", n_slices=3, files=())
    assert info.summary() == "uid=1.2?[31m C?T 'a?b' (3 slices)"


# ------------------------------------------------------------------------------------------ property


def _mutate(folder: Path, rng: random.Random) -> str:
    """One random header or file mutation of a valid series that must make it unreadable; returns its name.

    Only mutations that cannot leave a valid series are drawn: the new Rows/Columns/BitsAllocated/
    NumberOfFrames always change the declared pixel-data length, truncation always removes bytes but keeps
    the preamble and "DICM" (a file cut shorter is no DICOM file, ignored like a README), and a new PixelData
    length (value or length field) is never the right one.
    """
    files = _files(folder)
    victims = rng.sample(files, rng.randint(1, 3))
    expected = SHAPE[0] * SHAPE[1] * 2
    kind = rng.choice(["rows", "columns", "bits_allocated", "number_of_frames", "truncate", "pixel_length",
                       "length_field"])
    for path in victims:
        if kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: rng.randrange(132, len(data))])  # keeps "DICM": shorter is no DICOM file
            continue
        ds = pydicom.dcmread(path)
        if kind == "rows":
            ds.Rows = rng.choice([n for n in range(1, 64) if n != SHAPE[0]])
        elif kind == "columns":
            ds.Columns = rng.choice([n for n in range(1, 64) if n != SHAPE[1]])
        elif kind == "bits_allocated":
            ds.BitsAllocated = rng.choice([0, 1, 8, 12, 24, 32, 64])
        elif kind == "number_of_frames":
            ds.NumberOfFrames = rng.choice([0, 2, 3, 17])
        elif kind == "pixel_length":
            length = rng.choice([n for n in range(0, 2 * expected, 2) if n != expected])
            ds.PixelData = bytes(rng.getrandbits(8) for _ in range(length))
        ds.save_as(path, enforce_file_format=True)
        if kind == "length_field":  # the PixelData element's 32-bit length field: explicit VR OW, last element
            data = bytearray(path.read_bytes())
            at = len(data) - expected - 4
            assert struct.unpack("<L", data[at:at + 4])[0] == expected
            length = rng.choice([rng.randrange(0, expected, 2), rng.randrange(expected + 2, 2**32, 2)])
            data[at:at + 4] = struct.pack("<L", length)
            path.write_bytes(bytes(data))
    return kind


def test_random_header_mutations_are_always_refused(tmp_path, capsys):
    rng = random.Random(12)
    kinds = []
    for case in range(30):
        folder = tmp_path / f"case{case:02d}"
        _series(folder)
        kind = _mutate(folder, rng)
        kinds.append(kind)
        out = tmp_path / f"out{case:02d}"
        code = main(["analyze", str(folder), "-o", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == EXIT_BAD_INPUT, (case, kind, err)
        assert err.startswith("lunglesionai: error: ") and len(err.splitlines()) == 1, (case, kind, err)
        assert not out.exists()
    assert len(set(kinds)) >= 6  # the seed draws (nearly) every kind of mutation


@pytest.mark.parametrize("message, refused", [
    ("The (0028,0101) 'Bits Stored' value (12-bit) doesn't match the JPEG 2000 data (16-bit)", False),
    ("The (0028,0004) 'Photometric Interpretation' value is 'YBR_ICT' however the codestream says 'RGB'", False),
    ("The decoded RLE segment contains non-conformant padding - 40 vs. 30 bytes expected", True),
])
def test_metadata_warnings_of_intact_data_do_not_refuse(monkeypatch, tmp_path, message, refused):
    import warnings

    def frames_with_warning(ds):
        warnings.warn(message, UserWarning)
        yield np.zeros((2, 2), np.int16)

    monkeypatch.setattr(dicom_checks, "iter_pixels", frames_with_warning)
    check = lambda: dicom_checks._check_frames_decode(tmp_path / "x.dcm", pydicom.Dataset(), RLELossless)  # noqa: E731
    if refused:
        with pytest.raises(CTInputError, match="corrupt compressed pixel data"):
            check()
    else:
        check()
