"""Integration with a real PACS: Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``), started by the test.

Each test starts its own Orthanc on 127.0.0.1 (free HTTP and DICOM ports, a temporary storage folder, HTTP only from
this machine, C-STORE only from registered modalities), uploads a CT series through the REST API (the real
LIDC-IDRI-0001 slab from ../shared when present, else the small phantom exported as DICOM), and then

* has Orthanc push the series to ``DicomNode`` (REST ``/modalities/<node>/store``: a C-STORE to the node), which
  analyses it and C-STOREs the SEG and SR back into Orthanc; or
* runs ``lunglesionai analyze --dicomweb URL --study UID --store``, which reads the series over WADO-RS and stores
  the SEG and SR with STOW-RS;

and checks through the REST API that the SEG and SR are in the CT's study and reference the CT series. The
analyses use the fast classical settings (the pipeline's quality is not what is tested). Orthanc and the node
are stopped in teardown; every wait is bounded. Marked ``integration`` (run by ``.ci/run`` after ``make test``).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from conftest import SHARED_DATA

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
ORTHANC_AE, NODE_AE = "ORTHANC", "LLNODE"
PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
STARTUP_TIMEOUT_S = 60.0
ANALYSIS_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 60.0
LIDC_SLAB = ("lidc_slabs", "LIDC-IDRI-0001")


def _orthanc_binary() -> str:
    found = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                             if Path(p).is_file()), None)
    if found is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc; .ci/run installs it where apt works)")
    return found


def _dicomweb_plugin() -> str:
    for folder in PLUGIN_FOLDERS:
        path = Path(folder) / "libOrthancDicomWeb.so"
        if path.is_file():
            return str(path)
    pytest.skip(f"Orthanc's DICOMweb plugin libOrthancDicomWeb.so is not in {', '.join(PLUGIN_FOLDERS)} "
                "(Debian package orthanc-dicomweb)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST root ``url``, DICOM ``dicom_port`` and a session for the REST API."""

    url: str
    dicom_port: int
    session: requests.Session

    def get(self, path: str):
        answer = self.session.get(f"{self.url}{path}", timeout=HTTP_TIMEOUT_S)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, data) -> dict:
        answer = self.session.post(f"{self.url}{path}", data=data, timeout=HTTP_TIMEOUT_S)
        answer.raise_for_status()
        return answer.json() if answer.content else {}

    def add_modality(self, name: str, ae_title: str, port: int) -> None:
        body = json.dumps({"AET": ae_title, "Host": LOOPBACK, "Port": port})
        self.session.put(f"{self.url}/modalities/{name}", data=body, timeout=HTTP_TIMEOUT_S).raise_for_status()


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc with the DICOMweb plugin on loopback; stopped (terminate, then kill) in teardown."""
    binary, plugin = _orthanc_binary(), _dicomweb_plugin()
    http_port, dicom_port = _free_port(), _free_port()
    storage = tmp_path / "orthanc-db"
    config = {
        "Name": "LungLesionAI test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ORTHANC_AE,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,  # HTTP from this machine only
        "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,  # C-STORE only from registered modalities
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False, "HttpThreadsCount": 4, "DicomThreadsCount": 2, "ConcurrentJobs": 1,
    }
    config_path = tmp_path / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://{LOOPBACK}:{http_port}", dicom_port, requests.Session())
    try:
        _wait_until_up(server, process, tmp_path / "orthanc.log")
        yield server
    finally:
        server.session.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _wait_until_up(server: Orthanc, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with status {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if "dicom-web" in server.get("/plugins"):
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(f"Orthanc did not answer within {STARTUP_TIMEOUT_S} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory) -> list[Path]:
    """The real LIDC-IDRI-0001 slab (16 slices) when ../shared is present, else the small phantom as DICOM."""
    slab = SHARED_DATA.joinpath(*LIDC_SLAB)
    if slab.is_dir():
        return sorted(slab.glob("*.dcm"))
    from lunglesionai.io.dicom_results import export_volume_as_dicom_series
    from lunglesionai.synth import PhantomConfig, make_phantom

    phantom = make_phantom(replace(PhantomConfig.small(), seed=3))
    return export_volume_as_dicom_series(phantom.volume, tmp_path_factory.mktemp("ct") / "series")


@dataclass(frozen=True)
class Uploaded:
    study_id: str  # Orthanc's own identifiers
    series_id: str
    study_uid: str  # DICOM UIDs
    series_uid: str


def _upload(orthanc: Orthanc, files: list[Path]) -> Uploaded:
    answers = [orthanc.post("/instances", path.read_bytes()) for path in files]
    assert {a["Status"] for a in answers} <= {"Success", "AlreadyStored"}, answers
    first = dcmread(files[0], stop_before_pixels=True)
    return Uploaded(answers[0]["ParentStudy"], answers[0]["ParentSeries"], str(first.StudyInstanceUID),
                    str(first.SeriesInstanceUID))


def _results_in_study(orthanc: Orthanc, study_id: str) -> dict[str, list]:
    """{"SEG": [dataset, ...], "SR": [...]} of the study, each instance read back through the REST API."""
    found: dict[str, list] = {"SEG": [], "SR": []}
    for series in orthanc.get(f"/studies/{study_id}/series"):
        modality = series["MainDicomTags"].get("Modality")
        if modality not in found:
            continue
        for instance in series["Instances"]:
            answer = orthanc.session.get(f"{orthanc.url}/instances/{instance}/file", timeout=HTTP_TIMEOUT_S)
            answer.raise_for_status()
            found[modality].append(dcmread(io.BytesIO(answer.content)))
    return found


def _referenced_series(ds) -> set[str]:
    found = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        found |= {str(item.SeriesInstanceUID) for item in study.get("ReferencedSeriesSequence", [])}
    return found


def _check_results(orthanc: Orthanc, uploaded: Uploaded, out: Path) -> None:
    """The SR (and the SEG when the analysis wrote one) of ``out`` are in the CT's study in Orthanc and
    reference the CT series."""
    results = _results_in_study(orthanc, uploaded.study_id)
    expected_seg = (out / "nodules.seg.dcm").is_file()
    assert len(results["SR"]) == 1 and len(results["SEG"]) == int(expected_seg), results
    sr = results["SR"][0]
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.SOPInstanceUID == dcmread(out / "report.sr.dcm", stop_before_pixels=True).SOPInstanceUID
    seg_series = {str(ds.SeriesInstanceUID) for ds in results["SEG"]}
    for ds in results["SR"] + results["SEG"]:
        assert str(ds.StudyInstanceUID) == uploaded.study_uid
        assert uploaded.series_uid in _referenced_series(ds)
        assert _referenced_series(ds) <= {uploaded.series_uid} | seg_series  # the SR's evidence lists the SEG too
    for seg in results["SEG"]:
        assert seg.SOPClassUID == SegmentationStorage


def _fast_pipeline():
    from lunglesionai.pipeline import PipelineConfig

    return PipelineConfig(detector="classical", fpr=False, grade=False, device="cpu")


def test_orthanc_pushes_a_series_to_the_node_and_receives_seg_and_sr(orthanc, ct_files, tmp_path):
    import torch

    from lunglesionai.app.dicom_node import DicomNode, NodeConfig
    from lunglesionai.app.dicom_send import Destination

    torch.set_num_threads(1)
    uploaded = _upload(orthanc, ct_files)
    config = NodeConfig(ae_title=NODE_AE, port=0, destination=Destination(LOOPBACK, orthanc.dicom_port, ORTHANC_AE),
                        output_dir=tmp_path / "node", quiet_seconds=2.0, bind_address=LOOPBACK,
                        pipeline=_fast_pipeline())
    with DicomNode(config) as node:
        orthanc.add_modality("lunglesionai", NODE_AE, node._server.server_address[1])
        job = orthanc.post("/modalities/lunglesionai/store",
                           json.dumps({"Resources": [uploaded.series_id], "Synchronous": True}))
        assert job.get("InstancesCount", len(ct_files)) == len(ct_files), job
        outcomes = node.wait_for_outcomes(1, ANALYSIS_TIMEOUT_S)
    assert [o.status for o in outcomes] == ["sent"], outcomes
    assert outcomes[0].n_instances == len(ct_files)
    _check_results(orthanc, uploaded, tmp_path / "node" / uploaded.series_uid)


def test_analyze_dicomweb_reads_the_series_and_stores_seg_and_sr(orthanc, ct_files, tmp_path, capsys):
    import torch

    from lunglesionai.app.cli import main

    torch.set_num_threads(1)
    uploaded = _upload(orthanc, ct_files)
    out = tmp_path / "out"
    code = main(["analyze", "--dicomweb", f"{orthanc.url}/dicom-web", "--study", uploaded.study_uid, "-o", str(out),
                 "--store", "--detector", "classical", "--no-fpr", "--no-grading", "--device", "cpu",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (out / "report.json").is_file()
    assert f"into study {uploaded.study_uid}" in capsys.readouterr().out
    _check_results(orthanc, uploaded, out)


def test_analyze_dicomweb_refuses_an_unknown_study_with_one_line(orthanc, tmp_path, capsys):
    from lunglesionai.app.cli import main

    out = tmp_path / "out"
    code = main(["analyze", "--dicomweb", f"{orthanc.url}/dicom-web", "--study", "1.2.3.4.5", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1.2.3.4.5" in err, err
    assert not out.exists()
