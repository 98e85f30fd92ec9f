"""``lunglesionai dicom-node``: a DICOM Storage SCP that analyses each CT series a PACS sends it and stores the
DICOM SEG and SR back to a destination AE (pynetdicom; DICOM PS3.4 Annex B, Storage Service Class).

How a series travels:

1. C-STORE requests are answered one by one. CT Image Storage instances with Modality CT are written (each file
   atomically) to ``OUTPUT/spool/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
2. A series is complete when no instance of it arrived for ``--quiet-seconds`` (and no store of it is still being
   written). It is then analysed once, by :func:`lunglesionai.app.analysis.analyze_input`, into
   ``OUTPUT/<SeriesInstanceUID>/`` (the usual ``analyze`` folder, written atomically, with ``nodules.seg.dcm`` and
   ``report.sr.dcm``). Series are analysed one at a time, in the order they became complete, each in a fresh
   process (multiprocessing "spawn"), so that a crash or a library's per-thread state (VTK's offscreen window)
   of one analysis never reaches the node; the analysis' own log lines go to that process' stderr.
3. Only after the analysis returned are the SEG (when there are findings) and the SR sent, in one association, to
   ``--dest HOST:PORT:AE``; the spool of the series is then removed. A failed analysis sends nothing: the spool is
   moved to ``OUTPUT/failed/<SeriesInstanceUID>/`` with ``error.txt`` (a later resend of the series is analysed
   again). A failed send (association rejected or aborted, destination unreachable, a failure status) is logged;
   the results stay in ``OUTPUT/<SeriesInstanceUID>/`` to be sent again by hand (any storescu).

Answers to C-STORE (the node accepts presentation contexts of every storage SOP class, so that what it does not
analyse is answered per instance, with a log line naming the study and series, instead of an association-level
refusal the PACS would report without UIDs):

======  ================================================  ====================================================
status  meaning (PS3.4 B.2.3, PS3.7 C)                    when
======  ================================================  ====================================================
0x0000  Success                                           a CT instance was written to the spool
0x0122  Refused: SOP Class not supported                  any SOP class but CT Image Storage (MR, SR, SEG, ...)
0xA900  Error: Data Set does not match SOP Class          Modality is not CT; Study/Series/SOP Instance UID
                                                          missing or not a UID; a series seen under another study
0xA700  Refused: Out of Resources                         the spool file could not be written (disk full, ...)
0xC000  Error: Cannot understand                          the data set could not be decoded
0xC001  Error: Cannot understand (LungLesionAI: series    an instance of a series that is already being
        closed)                                           analysed (it arrived after the quiet period)
0xC002  Error: Cannot understand (LungLesionAI: series    an instance of a series whose results already exist
        already analysed)                                 in OUTPUT (remove that folder to analyse it again)
======  ================================================  ====================================================

Every problem is logged (logger ``lunglesionai.app.dicom_node``) with the StudyInstanceUID and SeriesInstanceUID.
The called AE title must be ``--ae-title`` (others are rejected at association). The node listens on 127.0.0.1
unless ``--bind`` names another address.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lunglesionai.app.dicom_send import (
    DEFAULT_AE_TITLE,
    NETWORK_TIMEOUT_S,
    Destination,
    DicomSendError,
    check_ae_title,
    parse_destination,
    store_results,
)

__all__ = ["DEFAULT_QUIET_SECONDS", "FAILED_NAME", "SPOOL_NAME", "STATUS_ALREADY_ANALYSED", "STATUS_CANNOT_UNDERSTAND",
           "STATUS_DOES_NOT_MATCH_SOP_CLASS", "STATUS_OUT_OF_RESOURCES", "STATUS_SERIES_CLOSED",
           "STATUS_SOP_CLASS_NOT_SUPPORTED", "STATUS_SUCCESS", "DicomNode", "NodeConfig", "SeriesOutcome",
           "fill_dicom_node_parser", "run_dicom_node"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 11112
"""The registered DICOM port (IANA "dicom", PS3.8 Annex G)."""
DEFAULT_QUIET_SECONDS = 10.0
"""Seconds without a new instance after which a series counts as complete."""
DEFAULT_BIND_ADDRESS = "127.0.0.1"
DEFAULT_INDICATION = "screening"
SPOOL_NAME = "spool"
FAILED_NAME = "failed"
NODE_LOG_NAME = "dicom-node.log"
ERROR_NAME = "error.txt"
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_SERIES_CLOSED = 0xC001
STATUS_ALREADY_ANALYSED = 0xC002
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX_LENGTH = 64  # PS3.5 9.1


@dataclass(frozen=True)
class NodeConfig:
    """Settings of a :class:`DicomNode`.

    Args:
        ae_title: the node's own AE title (called AE of incoming associations, calling AE when sending).
        port: TCP port to listen on (0: any free port; :meth:`DicomNode.start` returns the one chosen).
        destination: where the SEG and SR are C-STOREd.
        output_dir: holds ``spool/``, ``failed/`` and one result folder per analysed series.
        quiet_seconds: a series is complete after this many seconds without a new instance.
        bind_address: address to listen on (default loopback; a PACS on another machine needs e.g. 0.0.0.0).
        pipeline: the :class:`lunglesionai.pipeline.PipelineConfig` of the analyses (None: analyze's default).
        indication: "screening" (Lung-RADS) or "incidental" (Fleischner too), for every series; the patient's
            age and sex come from each series' DICOM header (:mod:`lunglesionai.clinical.patient`).
    """

    ae_title: str
    port: int
    destination: Destination
    output_dir: Path
    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    bind_address: str = DEFAULT_BIND_ADDRESS
    pipeline: Any = None
    indication: str = DEFAULT_INDICATION


@dataclass(frozen=True)
class SeriesOutcome:
    """What happened to one complete series: ``status`` is "sent", "analysis failed", "send failed" or "stopped";
    ``output`` the result folder (None when the analysis failed; status "stopped": the node stopped during the
    analysis, the instances stay in the spool); ``sent`` the file names stored at the
    destination; ``message`` the error, if any."""

    study_uid: str
    series_uid: str
    n_instances: int
    status: str
    output: Optional[Path] = None
    sent: tuple[str, ...] = ()
    message: str = ""


@dataclass
class _Pending:
    study_uid: str
    last_arrival: float
    n_instances: int = 0
    in_flight: int = 0

Analyze = Callable[..., Any]
"""``analyze(input_path, out_dir, *, series_uid, config, patient, indication)``, as :func:`lunglesionai.app.analysis.analyze_input`."""


@dataclass
class DicomNode:
    """The Storage SCP and its analysis worker (see the module text for the statuses and folders).

    ``start()`` listens (non-blocking) and starts one worker thread; ``stop()`` shuts both down; ``outcomes``
    lists a :class:`SeriesOutcome` per series handled so far. Use as a context manager in tests.

    Args:
        config: the node's settings.
        analyze: the analysis (default :func:`lunglesionai.app.analysis.analyze_input`); tests may pass another.
    """

    config: NodeConfig
    analyze: Optional[Analyze] = None
    outcomes: list[SeriesOutcome] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._busy: set[str] = set()
        self._stop = threading.Event()
        self._server = None
        self._worker: Optional[threading.Thread] = None
        self._output = Path(self.config.output_dir)

    def __enter__(self) -> DicomNode:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    @property
    def spool_dir(self) -> Path:
        return self._output / SPOOL_NAME

    def start(self) -> int:
        """Create the folders, take up series left in the spool by an earlier run, listen; returns the port.

        Raises:
            NotADirectoryError: ``output_dir`` is a file. PermissionError: it cannot be written.
            OSError: the address cannot be bound (port in use, address not local).
        """
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
        from pynetdicom.sop_class import CTImageStorage, Verification

        if self._output.exists() and not self._output.is_dir():
            raise NotADirectoryError(f"{self._output}: is a file; --output-dir names a folder")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._resume_spool()
        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_S
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        for context in StoragePresentationContexts:
            if context.abstract_syntax != CTImageStorage:
                ae.add_supported_context(context.abstract_syntax)
        self._server = ae.start_server((self.config.bind_address, self.config.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._handle_store)])
        self._worker = threading.Thread(target=self._work, name="lunglesionai-dicom-node", daemon=True)
        self._worker.start()
        port = int(self._server.server_address[1])
        logger.info("DICOM node %s listening on %s:%d; results go to %s", self.config.ae_title,
                    self.config.bind_address, port, self.config.destination)
        return port

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop listening and stop the worker (waiting up to ``timeout_s``); an analysis in progress is
        terminated and its series stays in the spool, to be analysed when a node starts on the folder again."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                logger.warning("DICOM node stopped while an analysis was still running")
            self._worker = None

    def wait_for_outcomes(self, count: int, timeout_s: float) -> list[SeriesOutcome]:
        """The outcomes once there are at least ``count`` of them, or after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.outcomes)

    def _handle_store(self, event) -> int:
        """EVT_C_STORE handler (an association thread): check, then spool the instance; returns the status."""
        from pynetdicom.sop_class import CTImageStorage

        sop_class = str(event.request.AffectedSOPClassUID)
        try:
            ds = event.dataset
        except Exception as error:  # noqa: BLE001 (any decode error of the peer's bytes is answered, not raised)
            logger.error("refused an instance of SOP class %s: its data set cannot be decoded (%s)", sop_class, error)
            return STATUS_CANNOT_UNDERSTAND
        study, series, sop = (str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                           "SOPInstanceUID"))
        where = f"study {study or '?'} series {series or '?'} instance {sop or '?'}"
        if sop_class != CTImageStorage:
            logger.warning("%s: refused (0x0122): SOP class %s is not CT Image Storage", where, sop_class)
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        if ds.get("Modality") != "CT":
            logger.warning("%s: refused (0xA900): Modality %r is not CT", where, ds.get("Modality"))
            return STATUS_DOES_NOT_MATCH_SOP_CLASS
        bad = [name for name, uid in (("Study", study), ("Series", series), ("SOP", sop)) if not _is_uid(uid)]
        if bad:
            logger.warning("%s: refused (0xA900): %s Instance UID missing or not a DICOM UID", where, bad[0])
            return STATUS_DOES_NOT_MATCH_SOP_CLASS
        status = self._open_series(study, series, where)
        if status != STATUS_SUCCESS:
            return status
        written = False
        try:
            self._spool(event, series, sop)
            written = True
        except OSError as error:
            logger.error("%s: refused (0xA700): cannot write to the spool: %s", where, error)
            return STATUS_OUT_OF_RESOURCES
        finally:
            with self._lock:
                pending = self._pending[series]
                pending.in_flight -= 1
                pending.n_instances += int(written)
                pending.last_arrival = time.monotonic()
        return STATUS_SUCCESS

    def _open_series(self, study: str, series: str, where: str) -> int:
        """Register one store in flight for ``series``; a failure status when the series cannot take it."""
        with self._lock:
            if series in self._busy:
                logger.warning("%s: refused (0xC001): the series is already being analysed (it arrived after %.1f "
                               "quiet seconds); send it again after the analysis ends", where, self.config.quiet_seconds)
                return STATUS_SERIES_CLOSED
            if (self._output / series).exists():
                logger.warning("%s: refused (0xC002): the series was already analysed into %s (remove that folder to "
                               "analyse it again)", where, self._output / series)
                return STATUS_ALREADY_ANALYSED
            pending = self._pending.setdefault(series, _Pending(study, time.monotonic()))
            if pending.study_uid != study:
                logger.warning("%s: refused (0xA900): the series arrived before under study %s", where,
                               pending.study_uid)
                return STATUS_DOES_NOT_MATCH_SOP_CLASS
            pending.in_flight += 1
        return STATUS_SUCCESS

    def _spool(self, event, series: str, sop: str) -> None:
        from lunglesionai.core.output_folder import write_file_atomic

        folder = self.spool_dir / series
        folder.mkdir(parents=True, exist_ok=True)
        data = event.encoded_dataset()
        write_file_atomic(folder / f"{sop}.dcm", lambda tmp: tmp.write_bytes(data))

    def _work(self) -> None:
        poll_s = min(0.5, max(0.05, self.config.quiet_seconds / 4))
        while not self._stop.wait(poll_s):
            due = self._next_complete_series()
            if due is not None:
                self._process(*due)

    def _next_complete_series(self) -> Optional[tuple[str, _Pending]]:
        now = time.monotonic()
        with self._lock:
            for series, pending in self._pending.items():
                if pending.in_flight == 0 and now - pending.last_arrival >= self.config.quiet_seconds:
                    del self._pending[series]
                    self._busy.add(series)
                    return series, pending
        return None

    def _process(self, series: str, pending: _Pending) -> None:
        """Analyse one complete series, then send its SEG and SR (only after the analysis returned)."""
        where = f"study {pending.study_uid} series {series}"
        try:
            outcome = self._analyse_and_send(series, pending, where)
        finally:
            with self._lock:
                self._busy.discard(series)
        self.outcomes.append(outcome)

    def _analyse_and_send(self, series: str, pending: _Pending, where: str) -> SeriesOutcome:
        from lunglesionai.clinical.patient import PatientInfo
        from lunglesionai.io.dicom_results import SEG_NAME, SR_NAME

        spool, out = self.spool_dir / series, self._output / series
        logger.info("%s: complete with %d instance(s); analysing", where, pending.n_instances)
        base = dict(study_uid=pending.study_uid, series_uid=series, n_instances=pending.n_instances)
        try:
            _run_in_child(self._analysis(), (spool, out), dict(
                series_uid=series, config=self.config.pipeline, patient=PatientInfo(),
                indication=self.config.indication), self._stop)
            if not (out / SR_NAME).is_file():
                raise RuntimeError(f"the analysis wrote no {SR_NAME} into {out}")
        except _Stopped:
            logger.warning("%s: the node stopped during the analysis; the instances stay in %s and are analysed "
                           "when it starts again", where, spool)
            return SeriesOutcome(**base, status="stopped")
        except Exception as error:  # noqa: BLE001 (a server: any failure of one series is logged, the node goes on)
            message = str(error) if isinstance(error, _AnalysisError) else f"{type(error).__name__}: {error}"
            kept = self._move_to_failed(spool, series, message)
            logger.error("%s: analysis failed, nothing was sent (%s); the instances are in %s", where, message, kept)
            return SeriesOutcome(**base, status="analysis failed", message=message)
        shutil.rmtree(spool, ignore_errors=True)
        files = [path for path in (out / SEG_NAME, out / SR_NAME) if path.is_file()]
        try:
            store_results(files, self.config.destination, calling_ae=self.config.ae_title)
        except (DicomSendError, OSError) as error:
            logger.error("%s: the results in %s were not sent: %s", where, out, error)
            return SeriesOutcome(**base, status="send failed", output=out, message=str(error))
        logger.info("%s: sent %s to %s", where, ", ".join(p.name for p in files), self.config.destination)
        return SeriesOutcome(**base, status="sent", output=out, sent=tuple(p.name for p in files))

    def _analysis(self) -> Analyze:
        if self.analyze is not None:
            return self.analyze
        from lunglesionai.app.analysis import analyze_input

        return analyze_input

    def _move_to_failed(self, spool: Path, series: str, message: str) -> Optional[Path]:
        """Move the spool of a failed series to ``failed/<series>`` (``-2``, ``-3``... when that exists), with
        ``error.txt``; returns the new folder (None when the move itself failed, which is logged)."""
        from lunglesionai.core.output_folder import write_file_atomic

        failed = self._output / FAILED_NAME
        target = failed / series
        number = 1
        while target.exists():
            number += 1
            target = failed / f"{series}-{number}"
        try:
            failed.mkdir(parents=True, exist_ok=True)
            shutil.move(str(spool), str(target))
            write_file_atomic(target / ERROR_NAME, lambda tmp: tmp.write_text(message + "\n", encoding="utf-8"))
        except OSError as error:
            logger.error("series %s: could not keep the failed instances in %s: %s", series, target, error)
            return None
        return target

    def _resume_spool(self) -> None:
        """Series left in the spool by an earlier run count as receiving (complete after the quiet period);
        temporary files of interrupted writes are removed."""
        from pydicom import dcmread

        for folder in sorted(p for p in self.spool_dir.iterdir() if p.is_dir()):
            for tmp in folder.glob(".*.tmp.dcm"):
                tmp.unlink(missing_ok=True)
            files = sorted(folder.glob("*.dcm"))
            if not files or not _is_uid(folder.name):
                continue
            study = str(dcmread(files[0], stop_before_pixels=True).get("StudyInstanceUID", "?"))
            self._pending[folder.name] = _Pending(study, time.monotonic(), n_instances=len(files))
            logger.info("study %s series %s: %d instance(s) left in the spool by an earlier run; analysed after "
                        "the quiet period", study, folder.name, len(files))


class _AnalysisError(RuntimeError):
    """The analysis in the child process raised (the message is its type and text) or the child died."""


class _Stopped(Exception):
    """The node was stopped while a child process was analysing."""


def _run_in_child(analyze: Analyze, args: tuple, kwargs: dict, stop: threading.Event) -> None:
    """``analyze(*args, **kwargs)`` in a fresh process (multiprocessing "spawn"): a crash, a leak or a library's
    per-thread state (VTK's offscreen window, torch threads) of one analysis never reaches the node or the next
    series. Returns when it finished.

    Raises:
        _AnalysisError: it raised (type and message kept) or the process died (exit code).
        _Stopped: ``stop`` was set; the child is terminated (SIGTERM: its atomic writers remove their staging).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, analyze, args, kwargs), name="lunglesionai-analysis")
    child.start()
    send.close()
    try:
        while not receive.poll(0.2):
            if stop.is_set():
                child.terminate()
                raise _Stopped()
            if not child.is_alive() and not receive.poll(0):
                raise _AnalysisError(f"the analysis process died (exit code {child.exitcode})")
        error = receive.recv()
    except EOFError as closed:
        raise _AnalysisError(f"the analysis process died (exit code {child.exitcode})") from closed
    finally:
        child.join(30)
        receive.close()
    if error is not None:
        raise _AnalysisError(error)


def _child_main(send, analyze: Analyze, args: tuple, kwargs: dict) -> None:
    """The analysis process: sends None on success, else "Type: message"."""
    import signal

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        analyze(*args, **kwargs)
        send.send(None)
    except Exception as error:  # noqa: BLE001 (reported to the node, which logs it with the series' UIDs)
        send.send(f"{type(error).__name__}: {error}")
    finally:
        send.close()


def _is_uid(text: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters, PS3.5 9.1): also safe as a file name."""
    return len(text) <= _UID_MAX_LENGTH and _UID.fullmatch(text) is not None


def fill_dicom_node_parser(p: argparse.ArgumentParser) -> None:
    """The options of ``lunglesionai dicom-node`` (this module's text says what the node does)."""
    from lunglesionai.app.arguments import add_detection_arguments

    p.add_argument("--ae-title", default=DEFAULT_AE_TITLE, type=lambda t: check_ae_title(t, "--ae-title"),
                   help="the node's AE title (called AE of the PACS's C-STORE; calling AE when sending results; "
                   "default %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port to listen on (default %(default)s)")
    p.add_argument("--bind", default=DEFAULT_BIND_ADDRESS, metavar="ADDRESS",
                   help="address to listen on (default %(default)s, this machine only; 0.0.0.0 for all)")
    p.add_argument("--dest", required=True, type=parse_destination, metavar="HOST:PORT:AE",
                   help="where the SEG and SR of each analysed series are C-STOREd (usually the PACS itself)")
    p.add_argument("--output-dir", default="lunglesionai-node", metavar="DIR",
                   help="spool, failed series and one analyze folder per series (default ./%(default)s)")
    p.add_argument("--quiet-seconds", type=float, default=DEFAULT_QUIET_SECONDS, metavar="S",
                   help="a series is complete after S seconds without a new instance (default %(default)s)")
    p.add_argument("--indication", choices=("screening", "incidental"), default=DEFAULT_INDICATION,
                   help="clinical read of every series: screening (Lung-RADS) or incidental (Fleischner too); age "
                   "and sex come from each series' header (default %(default)s)")
    add_detection_arguments(p)
    p.add_argument("--no-grading", action="store_true", help="skip the DenseSharp grader (classical masks only)")
    p.set_defaults(func=run_dicom_node)


def run_dicom_node(args: argparse.Namespace) -> int:
    """``lunglesionai dicom-node``: run the node until Ctrl-C (exit 0) or SIGTERM (exit 143); the node's log
    also goes to ``OUTPUT/dicom-node.log``.

    Raises:
        ValueError: ``--port`` outside 0..65535, ``--quiet-seconds`` not > 0, or the address cannot be bound.
        NotADirectoryError, PermissionError: ``--output-dir`` is a file or cannot be written.
    """
    import math

    from lunglesionai.pipeline import PipelineConfig

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: not 0..65535")
    if not (math.isfinite(args.quiet_seconds) and args.quiet_seconds > 0):
        raise ValueError(f"--quiet-seconds {args.quiet_seconds}: must be a number of seconds > 0")
    pipeline = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr,
                              grade=not args.no_grading, device=args.device)
    config = NodeConfig(ae_title=args.ae_title, port=args.port, destination=args.dest,
                        output_dir=Path(args.output_dir), quiet_seconds=args.quiet_seconds,
                        bind_address=args.bind, pipeline=pipeline, indication=args.indication)
    if config.output_dir.exists() and not config.output_dir.is_dir():
        raise NotADirectoryError(f"{config.output_dir}: is a file; --output-dir names a folder")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    node = DicomNode(config)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per PDU otherwise
    file_log = logging.FileHandler(config.output_dir / NODE_LOG_NAME, encoding="utf-8")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_log.setLevel(logging.INFO)
    logging.getLogger().addHandler(file_log)
    try:
        port = node.start()
    except OSError as error:
        logging.getLogger().removeHandler(file_log)
        file_log.close()
        if isinstance(error, (NotADirectoryError, PermissionError)):
            raise
        raise ValueError(f"--bind {args.bind} --port {args.port}: cannot listen there: {error}") from error
    print(f"dicom-node {config.ae_title} listening on {config.bind_address}:{port}; results to {config.destination};"
          f" folder {config.output_dir} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("dicom-node: stopped (Ctrl-C)", flush=True)
        return 0
    finally:
        node.stop()
        logging.getLogger().removeHandler(file_log)
        file_log.close()
