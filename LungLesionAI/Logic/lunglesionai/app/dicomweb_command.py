"""``lunglesionai analyze --dicomweb URL --study UID [--series UID] -o OUT [--store]``: analyse a CT series held by
a DICOMweb server (dicomweb-client; DICOM PS3.18: QIDO-RS to find the series, WADO-RS to read it, STOW-RS to store
the results).

The series (``--series``, or the study's only CT series) is downloaded into a temporary folder, analysed by
:func:`lunglesionai.app.analysis.analyze_input` into ``OUT`` exactly as ``analyze DICOM_DIR -o OUT`` would (with
``nodules.seg.dcm`` and ``report.sr.dcm``), and the temporary folder is removed. With ``--store`` the SEG (when
there are findings) and the SR are then stored into the same study with one STOW-RS request, only after the
analysis wrote ``OUT`` completely. Every problem (options that do not fit, a server that cannot be reached or
answers with an HTTP error, a study without a CT series or with several, a store the server refuses) is one line
``lunglesionai: error: <URL>: <problem>`` and exit status 2; ``OUT`` is written only by a finished analysis.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["DicomWebError", "add_dicomweb_arguments", "choose_series", "download_series", "run_dicomweb_analyze",
           "store_results_dicomweb", "uses_dicomweb"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
"""Seconds to wait for the server's first byte of an answer (a large series can take a while)."""
HTTP_ATTEMPTS = 3
"""Tries of each request when the connection fails or the server answers 429/503/504 (dicomweb-client's retry)."""
HTTP_RETRY_WAIT_MS = 500
"""Back-off multiplier: waits of about 1 s, then 2 s between the tries."""
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MODALITY_TAG, _SERIES_UID_TAG = "00080060", "0020000E"
_FAILED_SOP_SEQUENCE = "FailedSOPSequence"


class DicomWebError(ValueError):
    """The DICOMweb server cannot be used for this request (unreachable, HTTP error, no such series, refused
    store); the message names the URL. A ValueError, so the command line answers it with exit status 2."""


def add_dicomweb_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dicomweb URL``, ``--study UID``, ``--series UID`` and ``--store`` to the ``analyze`` parser."""
    group = parser.add_argument_group("DICOMweb (read the CT from a server instead of INPUT, store results back)")
    group.add_argument("--dicomweb", metavar="URL", help="DICOMweb root URL, e.g. http://127.0.0.1:8042/dicom-web "
                       "(Orthanc); INPUT is then left out")
    group.add_argument("--study", metavar="UID", help="StudyInstanceUID of the CT (with --dicomweb)")
    group.add_argument("--series", dest="dicomweb_series", metavar="UID",
                       help="SeriesInstanceUID (with --dicomweb; default: the study's only CT series)")
    group.add_argument("--store", action="store_true", help="store nodules.seg.dcm and report.sr.dcm into the "
                       "study (STOW-RS) once the analysis is written")


def uses_dicomweb(args: argparse.Namespace) -> bool:
    """Whether ``analyze`` was asked for DICOMweb (or given no INPUT): then :func:`run_dicomweb_analyze` runs."""
    return args.input is None or any(getattr(args, name, None) for name in ("dicomweb", "study", "dicomweb_series",
                                                                             "store"))


def run_dicomweb_analyze(args: argparse.Namespace, run_analyze: Callable[[argparse.Namespace], int]) -> int:
    """``analyze --dicomweb URL --study UID [--series UID] -o OUT [--store]`` (see the module text).

    Args:
        args: the parsed ``analyze`` options.
        run_analyze: ``lunglesionai.app.cli.run_analyze``, run on the downloaded series folder with the same
            options (so the output folder, the run log and the printed summary are those of ``analyze DIR``).

    Raises:
        ValueError: INPUT together with --dicomweb, neither of them, --study/--series/--store without
            --dicomweb, --dicomweb without --study, a UID that is not one, a URL that is not http(s), --prior.
        DicomWebError: the server problems listed in the module text.
        Exception: what ``run_analyze`` raises (bad CT, refused output folder).
    """
    _check_arguments(args)
    from dicomweb_client.api import DICOMwebClient

    from lunglesionai.core.output_folder import check_output_folder

    out = check_output_folder(args.output, overwrite=args.overwrite)  # refused before anything is downloaded
    client = DICOMwebClient(args.dicomweb, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    client.set_http_retry_params(max_attempts=HTTP_ATTEMPTS, wait_exponential_multiplier=HTTP_RETRY_WAIT_MS)
    series_uid = choose_series(client, args.dicomweb, args.study, args.dicomweb_series or args.series_uid)
    with tempfile.TemporaryDirectory(prefix="lunglesionai-dicomweb-") as tmp:
        n = download_series(client, args.dicomweb, args.study, series_uid, Path(tmp))
        logger.info("read %d instance(s) of series %s of study %s from %s", n, series_uid, args.study, args.dicomweb)
        local = argparse.Namespace(**{**vars(args), "input": tmp, "series_uid": series_uid, "dicomweb": None,
                                      "study": None, "dicomweb_series": None, "store": False})
        code = run_analyze(local)
    if code == 0 and args.store:
        stored = store_results_dicomweb(client, args.dicomweb, args.study, out)
        print(f"stored {', '.join(stored)} into study {args.study} at {args.dicomweb}")
    return code


def _check_arguments(args: argparse.Namespace) -> None:
    if args.dicomweb is None:
        if args.input is None:
            raise ValueError("analyze needs INPUT (a CT file or DICOM folder) or --dicomweb URL --study UID")
        raise ValueError("--study, --series and --store need --dicomweb URL")
    if args.input is not None:
        raise ValueError(f"{args.input}: give INPUT or --dicomweb, not both")
    if not re.match(r"https?://[^/\s]+", args.dicomweb):
        raise ValueError(f"--dicomweb {args.dicomweb!r}: not an http:// or https:// URL")
    if args.study is None:
        raise ValueError("--dicomweb needs --study UID")
    for option, uid in (("--study", args.study), ("--series", args.dicomweb_series)):
        if uid is not None and (len(uid) > 64 or not _UID.fullmatch(uid)):
            raise ValueError(f"{option} {uid!r}: not a DICOM UID (digits and dots, at most 64 characters)")
    if getattr(args, "prior", None):
        raise ValueError("--prior is not supported with --dicomweb (analyse the prior from a file or folder)")


def choose_series(client, url: str, study_uid: str, series_uid: str | None) -> str:
    """The SeriesInstanceUID to analyse: ``series_uid`` when the study has it, else the study's only CT series.

    Args:
        client: a ``dicomweb_client.api.DICOMwebClient``.
        url: the server's URL (for messages).

    Raises:
        DicomWebError: the server cannot be searched; the study has no such series, no CT series, or several CT
            series and ``series_uid`` is None (the message lists them).
    """
    found = _call(url, f"search the series of study {study_uid}", client.search_for_series,
                  study_instance_uid=study_uid)
    modality = {_json_value(s, _SERIES_UID_TAG): _json_value(s, _MODALITY_TAG) for s in found}
    if series_uid is not None:
        if series_uid not in modality:
            raise DicomWebError(f"{url}: study {study_uid} has no series {series_uid}")
        return series_uid
    ct = [uid for uid, kind in modality.items() if kind == "CT"]
    if not ct:
        raise DicomWebError(f"{url}: study {study_uid} has no CT series (found: {sorted(set(modality.values()))})")
    if len(ct) > 1:
        raise DicomWebError(f"{url}: study {study_uid} has {len(ct)} CT series; choose one with --series: "
                            f"{', '.join(ct)}")
    return ct[0]


def download_series(client, url: str, study_uid: str, series_uid: str, folder: Path) -> int:
    """Write every instance of the series into ``folder`` (one file each, as the server sends it); returns the
    number written.

    Raises:
        DicomWebError: the server cannot be read, or the series has no instance.
    """
    def write_all() -> int:
        count = 0
        for count, ds in enumerate(client.iter_series(study_uid, series_uid), start=1):
            ds.save_as(folder / f"{count:05d}.dcm", enforce_file_format=True)
        return count

    count = _call(url, f"read series {series_uid}", write_all)
    if count == 0:
        raise DicomWebError(f"{url}: series {series_uid} of study {study_uid} has no instance")
    return count


def store_results_dicomweb(client, url: str, study_uid: str, out: Path) -> list[str]:
    """STOW-RS the SEG (when written) and the SR of the output folder ``out`` into the study; returns the names
    of the files stored.

    Raises:
        DicomWebError: the server refused the request or some of the instances (FailedSOPSequence), or ``out``
            has no SR.
    """
    from pydicom import dcmread

    from lunglesionai.io.dicom_results import SEG_NAME, SR_NAME

    if not (out / SR_NAME).is_file():
        raise DicomWebError(f"{url}: nothing stored: {out / SR_NAME} was not written")
    files = [p for p in (out / SEG_NAME, out / SR_NAME) if p.is_file()]
    answer = _call(url, f"store the results into study {study_uid} (they are in {out})", client.store_instances,
                   datasets=[dcmread(p) for p in files], study_instance_uid=study_uid)
    failed = getattr(answer, _FAILED_SOP_SEQUENCE, None) if answer is not None else None
    if failed:
        raise DicomWebError(f"{url}: refused {len(failed)} of {len(files)} result instance(s) of study {study_uid} "
                            f"(they are in {out})")
    return [p.name for p in files]


def _call(url: str, what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``, its network and HTTP errors turned into one :class:`DicomWebError`."""
    import requests

    try:
        return function(*args, **kwargs)
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise DicomWebError(f"{url}: could not {what}: HTTP {status}") from error
    except requests.RequestException as error:
        raise DicomWebError(f"{url}: could not {what}: {type(error).__name__}: {error}") from error


def _json_value(item: dict, tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON object (PS3.18 F.2), None when absent."""
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]
