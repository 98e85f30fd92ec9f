"""``analyze --dicomweb``: the option checks and an unreachable server, without a server (the round trip through a
real DICOMweb server is Testing/integration/test_orthanc.py)."""

from __future__ import annotations

import socket

import pytest

from lunglesionai.app.cli import main

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.mark.parametrize("argv, problem", [
    ([], "needs INPUT"),
    (["ct.nii.gz", "--study", STUDY], "need --dicomweb"),
    (["ct.nii.gz", "--dicomweb", "http://127.0.0.1:1/dicom-web", "--study", STUDY], "not both"),
    (["--dicomweb", "http://127.0.0.1:1/dicom-web"], "needs --study"),
    (["--dicomweb", "ftp://127.0.0.1/x", "--study", STUDY], "not an http"),
    (["--dicomweb", "http://127.0.0.1:1/dicom-web", "--study", "1.2.x"], "not a DICOM UID"),
    (["--dicomweb", "http://127.0.0.1:1/dicom-web", "--study", STUDY, "--series", "../a"], "not a DICOM UID"),
    (["--dicomweb", "http://127.0.0.1:1/dicom-web", "--study", STUDY, "--prior", "p.nii"], "--prior"),
], ids=["nothing", "study without dicomweb", "both inputs", "no study", "not http", "bad study uid",
        "bad series uid", "prior"])
def test_options_that_do_not_fit_are_one_line_and_exit_2(tmp_path, capsys, argv, problem):
    out = tmp_path / "out"
    assert main(["analyze", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lunglesionai: error:") and err.count("\n") == 1 and problem in err, err
    assert not out.exists()


def test_an_unreachable_server_is_one_line_naming_the_url(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    out = tmp_path / "out"
    assert main(["analyze", "--dicomweb", url, "--study", STUDY, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and url in err and "ConnectionError" in err, err
    assert not out.exists()
