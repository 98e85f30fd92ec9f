"""The DICOM node (``lunglesionai dicom-node``) on loopback: a pynetdicom Storage SCP stands in for the PACS.

The end-to-end test sends the small phantom (exported as a CT series) to the node, which analyses it with the fast
classical settings and C-STOREs the SEG and SR to the stand-in; the others check the answers to bad instances, a
failed analysis (a 5-slice series: analyze refuses fewer than 10 slices) and a destination that rejects the
association. Every server listens on 127.0.0.1 on a free port chosen by the OS and is shut down in teardown.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    MRImageStorage,
    SegmentationStorage,
)

from dicom_fixtures import write_series
from lunglesionai.app.dicom_node import (
    STATUS_ALREADY_ANALYSED,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    DicomNode,
    NodeConfig,
)
from lunglesionai.app.dicom_send import Destination, DicomSendError, parse_destination, store_results

LOOPBACK = "127.0.0.1"
NODE_AE, DEST_AE = "LLNODE", "STANDIN"
TIMEOUT_S = 120.0


class StandIn:
    """A Storage SCP that keeps every data set it receives (the PACS of these tests)."""

    def __init__(self, ae_title: str = DEST_AE) -> None:
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.supported_contexts = StoragePresentationContexts
        self.received: list[Dataset] = []
        self.server = ae.start_server((LOOPBACK, 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.destination = Destination(LOOPBACK, int(self.server.server_address[1]), ae_title)

    def _store(self, event) -> int:
        self.received.append(event.dataset)
        return 0x0000


@pytest.fixture
def standin():
    server = StandIn()
    try:
        yield server
    finally:
        server.server.shutdown()


def _node(tmp_path: Path, destination: Destination, **kwargs) -> DicomNode:
    from lunglesionai.pipeline import PipelineConfig

    fast = PipelineConfig(detector="classical", fpr=False, grade=False, device="cpu")
    config = NodeConfig(ae_title=NODE_AE, port=0, destination=destination, output_dir=tmp_path / "node",
                        quiet_seconds=0.5, bind_address=LOOPBACK, pipeline=fast)
    return DicomNode(replace(config, **kwargs.pop("config", {})), **kwargs)


def _send(datasets, port: int, ae_title: str = NODE_AE) -> list[int]:
    """C-STORE each data set to the node; the status of each (None when the association failed)."""
    ae = AE(ae_title="TESTSCU")
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory):
    """The small phantom as a synthetic CT series: (files, study uid, series uid)."""
    from lunglesionai.io.dicom_results import export_volume_as_dicom_series
    from lunglesionai.synth import PhantomConfig, make_phantom

    phantom = make_phantom(replace(PhantomConfig.small(), seed=3))
    files = export_volume_as_dicom_series(phantom.volume, tmp_path_factory.mktemp("ct") / "series")
    first = dcmread(files[0], stop_before_pixels=True)
    return files, str(first.StudyInstanceUID), str(first.SeriesInstanceUID)


def _referenced_series(ds: Dataset) -> set[str]:
    """SeriesInstanceUIDs a SEG (ReferencedSeriesSequence) or SR (CurrentRequestedProcedureEvidenceSequence)
    references."""
    found = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        found |= {str(item.SeriesInstanceUID) for item in study.get("ReferencedSeriesSequence", [])}
    return found


@pytest.mark.integration  # a node and a destination on loopback, one real analysis: run by .ci/run after make test
def test_a_complete_series_is_analysed_once_and_its_seg_and_sr_are_sent(phantom_series, standin, tmp_path):
    import torch

    torch.set_num_threads(1)
    files, study_uid, series_uid = phantom_series
    with _node(tmp_path, standin.destination) as node:
        port = node._server.server_address[1]
        assert _send([dcmread(f) for f in files], port) == [0] * len(files)
        outcomes = node.wait_for_outcomes(1, TIMEOUT_S)
        assert [o.status for o in outcomes] == ["sent"], outcomes
        assert outcomes[0].n_instances == len(files)
        # the series is analysed once: sending one of its instances again is refused
        assert _send([dcmread(files[0])], port) == [STATUS_ALREADY_ANALYSED]
    report = (tmp_path / "node" / series_uid / "report.json")
    assert report.is_file()
    assert not (tmp_path / "node" / "spool" / series_uid).exists()
    classes = [str(ds.SOPClassUID) for ds in standin.received]
    assert classes.count(Comprehensive3DSRStorage) == 1
    assert classes.count(SegmentationStorage) == (1 if "nodules.seg.dcm" in outcomes[0].sent else 0)
    assert set(outcomes[0].sent) <= {"nodules.seg.dcm", "report.sr.dcm"}
    seg_series = {str(ds.SeriesInstanceUID) for ds in standin.received if ds.SOPClassUID == SegmentationStorage}
    for ds in standin.received:
        assert str(ds.StudyInstanceUID) == study_uid
        assert series_uid in _referenced_series(ds)
        assert _referenced_series(ds) <= {series_uid} | seg_series  # the SR's evidence lists the SEG too


def _instance(sop_class: str, modality: str, **uids) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uids.get("sop", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, meta.MediaStorageSOPInstanceUID, modality
    ds.StudyInstanceUID = uids.get("study", generate_uid())
    ds.SeriesInstanceUID = uids.get("series", generate_uid())
    return ds


@pytest.mark.parametrize(
    "sop_class, modality, uids, status",
    [
        (MRImageStorage, "MR", {}, STATUS_SOP_CLASS_NOT_SUPPORTED),  # not a CT SOP class
        (CTImageStorage, "MR", {}, STATUS_DOES_NOT_MATCH_SOP_CLASS),  # CT SOP class, Modality MR
        (CTImageStorage, "CT", {"series": "../../escape"}, STATUS_DOES_NOT_MATCH_SOP_CLASS),  # not a UID
    ],
    ids=["MR SOP class", "CT SOP class with Modality MR", "series UID that is a path"],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the path-like UID, on purpose
def test_instances_that_are_not_ct_are_refused_with_a_status_and_logged(standin, tmp_path, caplog, sop_class,
                                                                         modality, uids, status):
    ds = _instance(sop_class, modality, **uids)
    with caplog.at_level(logging.WARNING, logger="lunglesionai.app.dicom_node"), \
            _node(tmp_path, standin.destination) as node:
        assert _send([ds], node._server.server_address[1]) == [status]
    spool = tmp_path / "node" / "spool"
    assert list(spool.iterdir()) == []
    assert any(str(ds.SeriesInstanceUID) in r.getMessage() and str(ds.StudyInstanceUID) in r.getMessage()
               for r in caplog.records)


def test_a_failed_analysis_sends_nothing_and_keeps_the_instances(standin, tmp_path, caplog):
    folder = tmp_path / "short"
    series_uid = write_series(folder, [0.0, 2.0, 4.0, 6.0, 8.0])  # 5 slices: analyze refuses fewer than 10
    datasets = [dcmread(p) for p in sorted(folder.iterdir())]
    with caplog.at_level(logging.ERROR, logger="lunglesionai.app.dicom_node"), \
            _node(tmp_path, standin.destination) as node:
        assert _send(datasets, node._server.server_address[1]) == [0] * 5
        outcomes = node.wait_for_outcomes(1, TIMEOUT_S)
    assert [o.status for o in outcomes] == ["analysis failed"]
    assert standin.received == []
    failed = tmp_path / "node" / "failed" / series_uid
    assert len(list(failed.glob("*.dcm"))) == 5
    assert "10" in (failed / "error.txt").read_text()
    assert not (tmp_path / "node" / series_uid).exists()
    assert not (tmp_path / "node" / "spool" / series_uid).exists()
    assert any(series_uid in r.getMessage() and "nothing was sent" in r.getMessage() for r in caplog.records)


def _fake_analysis(input_path, out_dir, *, series_uid, config, **clinical):
    """Writes only an SR-named DICOM file, as a finished analysis would (no pipeline: the send path is tested)."""
    from lunglesionai.io.dicom_results import SR_NAME

    out = Path(out_dir)
    out.mkdir()
    ds = _instance(Comprehensive3DSRStorage, "SR", series=generate_uid())
    ds.save_as(out / SR_NAME, enforce_file_format=True)
    return {SR_NAME: out / SR_NAME}


def test_a_destination_that_rejects_the_association_is_logged(standin, tmp_path, caplog):
    wrong = replace(standin.destination, ae_title="NOTKNOWN")  # the stand-in requires its own called AE title
    series = write_series(tmp_path / "ct", [0.0, 2.0])
    datasets = [dcmread(p) for p in sorted((tmp_path / "ct").iterdir())]
    with caplog.at_level(logging.ERROR, logger="lunglesionai.app.dicom_node"), \
            _node(tmp_path, wrong, analyze=_fake_analysis) as node:
        assert _send(datasets, node._server.server_address[1]) == [0, 0]
        outcomes = node.wait_for_outcomes(1, TIMEOUT_S)
    assert [o.status for o in outcomes] == ["send failed"]
    assert "rejected the association" in outcomes[0].message
    assert standin.received == []
    assert (tmp_path / "node" / series / "report.sr.dcm").is_file()  # kept, to be sent again by hand
    assert any(series in r.getMessage() and "not sent" in r.getMessage() for r in caplog.records)


def test_store_results_reports_an_unreachable_destination(tmp_path):
    path = tmp_path / "x.dcm"
    _instance(Comprehensive3DSRStorage, "SR").save_as(path, enforce_file_format=True)
    closed = StandIn()
    port = closed.destination.port
    closed.server.shutdown()  # nothing listens on the port now
    with pytest.raises(DicomSendError, match="did not accept an association"):
        store_results([path], Destination(LOOPBACK, port, DEST_AE), timeout_s=5)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:4242:ORTHANC", Destination("127.0.0.1", 4242, "ORTHANC")),
    ("::1:104:PACS", Destination("::1", 104, "PACS")),
])
def test_parse_destination(text, expected):
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:4242", "127.0.0.1:0:AE", "host:x:AE", "h:104:", "h:104:" + "A" * 17,
                                  "h:104:A\\B"])
def test_parse_destination_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--dest"):
        parse_destination(text)


def test_dicom_node_command_line(tmp_path, capsys):
    from lunglesionai.app.cli import build_parser, main

    argv = ["dicom-node", "--ae-title", "NODE", "--port", "0", "--dest", "127.0.0.1:4242:PACS",
            "--output-dir", str(tmp_path / "out"), "--quiet-seconds", "3"]
    args = build_parser(argv).parse_args(argv)
    assert (args.ae_title, args.dest, args.quiet_seconds) == ("NODE", Destination("127.0.0.1", 4242, "PACS"), 3.0)
    (tmp_path / "file").write_text("x")
    bad = [*argv[:-4], "--output-dir", str(tmp_path / "file")]
    assert main(bad) == 2
    assert "is a file" in capsys.readouterr().err
    assert main([*argv[:-2], "--quiet-seconds", "0"]) == 2
    assert os.listdir(tmp_path) == ["file"]
