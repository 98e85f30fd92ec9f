"""Sending results to a DICOM destination (C-STORE SCU, pynetdicom; DICOM PS3.4 Annex B): the destination's
address (``HOST:PORT:AE``) and one association that stores the SEG and the SR. Used by ``lunglesionai dicom-node``
(:mod:`lunglesionai.app.dicom_node`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_AE_TITLE", "Destination", "DicomSendError", "check_ae_title", "parse_destination",
           "store_results"]

logger = logging.getLogger(__name__)

DEFAULT_AE_TITLE = "LUNGLESIONAI"
NETWORK_TIMEOUT_S = 30.0
"""Seconds to wait for the association, each DIMSE answer and the network (pynetdicom's three timeouts)."""


class DicomSendError(RuntimeError):
    """The destination did not accept the results (association rejected/aborted, unreachable, failure status)."""


@dataclass(frozen=True)
class Destination:
    """Where results are C-STOREd: ``host``, TCP ``port`` and the destination's (called) ``ae_title``."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``HOST:PORT:AE`` → :class:`Destination` (the host may be an IPv6 address: the last two fields are split off).

    Raises:
        argparse.ArgumentTypeError: not three fields, a port outside 1..65535, an AE title that is empty, longer
            than 16 characters or holds a backslash or control character (PS3.5 6.2, AE VR).

    Example:
        >>> parse_destination("127.0.0.1:4242:ORTHANC")
        Destination(host='127.0.0.1', port=4242, ae_title='ORTHANC')
    """
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"--dest needs HOST:PORT:AE, got {text!r}")
    host, port, ae_title = parts
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--dest {text!r}: port {port!r} is not 1..65535")
    return Destination(host, int(port), check_ae_title(ae_title, "--dest"))


def check_ae_title(title: str, option: str) -> str:
    """``title`` without its surrounding spaces, when it is a usable AE title (PS3.5 6.2, AE VR).

    Raises:
        argparse.ArgumentTypeError: empty, longer than 16 characters, a backslash or a non-printable or non-ASCII
            character; the message names ``option``.
    """
    stripped = title.strip()
    if not stripped or len(title) > 16 or "\\" in title or not title.isprintable() or not title.isascii():
        raise argparse.ArgumentTypeError(f"{option}: AE title {title!r} must be 1-16 printable ASCII characters "
                                         "without a backslash")
    return stripped


def store_results(paths: Sequence[Path], destination: Destination, *, calling_ae: str = DEFAULT_AE_TITLE,
                  timeout_s: float = NETWORK_TIMEOUT_S) -> None:
    """C-STORE the DICOM files ``paths`` (in order: the SEG before the SR that references it) in one association.

    Raises:
        DicomSendError: the association was rejected, aborted or could not be made; a C-STORE got no answer or
            a failure status (warnings are accepted and logged). Files stored before the failure stay stored.
        FileNotFoundError, pydicom.errors.InvalidDicomError: a path is not a readable DICOM file.
    """
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.status import code_to_category

    datasets = [dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in datasets if ds.SOPClassUID == sop_class}
        ae.add_requested_context(sop_class, list(dict.fromkeys([*sorted(syntaxes), ExplicitVRLittleEndian,
                                                                 ImplicitVRLittleEndian])))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        what = ("rejected the association (does it know the calling AE title "
                f"{calling_ae!r} at this address?)" if assoc.is_rejected else
                "did not accept an association (not listening, unreachable, aborted or no common presentation "
                "context)")
        raise DicomSendError(f"{destination}: {what}")
    try:
        for path, ds in zip(paths, datasets):
            answer = assoc.send_c_store(ds)
            code = answer.get("Status") if answer else None
            if code is None:
                raise DicomSendError(f"{destination}: no answer to the C-STORE of {Path(path).name} (connection "
                                     "lost or timed out)")
            category = code_to_category(int(code))
            if category == "Warning":
                logger.warning("%s: stored %s with warning status 0x%04X", destination, Path(path).name, code)
            elif category != "Success":
                raise DicomSendError(f"{destination}: C-STORE of {Path(path).name} answered 0x{int(code):04X} "
                                     f"({category})")
    finally:
        if assoc.is_established:
            assoc.release()
