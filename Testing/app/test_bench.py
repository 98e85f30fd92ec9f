"""Tests of ``lunglesionai bench --input``: timing the pipeline on a given CT instead of the phantom."""

from __future__ import annotations

import json
import statistics

import pytest

from lunglesionai.app.bench import BenchConfig, format_benchmark, run_benchmark
from lunglesionai.app.cli import EXIT_BAD_INPUT, main
from lunglesionai.io.ct_files import save_volume
from lunglesionai.pipeline import PipelineConfig
from lunglesionai.synth import PhantomConfig, make_phantom

#: The keys the issue's outside check reads (as for the phantom), plus the input's path.
CONTRACT_KEYS = {"stages", "total_s", "peak_rss_mb", "volume_shape_zyx", "input"}


@pytest.fixture(scope="module")
def tiny_ct(tmp_path_factory):
    """A small phantom written as NRRD: a CT that load_volume reads like any other file."""
    phantom = make_phantom(PhantomConfig.small(shape_zyx=(16, 128, 128), n_nodules=1, seed=2))
    path = tmp_path_factory.mktemp("ct") / "tiny_ct.nrrd"
    save_volume(phantom.volume, path)
    return phantom.volume, path


def test_run_benchmark_times_the_given_ct(tiny_ct):
    volume, path = tiny_ct
    fast = PipelineConfig(detector="classical", fpr=False, grade=False, uld=False)
    result = run_benchmark(BenchConfig(input_path=str(path), repeats=2, shape_zyx=(300, 512, 512)), fast)
    assert CONTRACT_KEYS <= set(result)
    assert result["input"] == str(path) and result["uld"] is False
    assert result["volume_shape_zyx"] == list(volume.shape_zyx)  # the file's shape, not --shape's
    assert result["spacing_mm"] == pytest.approx(volume.spacing_mm)
    assert result["load_s"] > 0 and result["phantom_s"] is None and len(result["runs"]) == 2
    assert {"lung_mask", "detection", "export"} <= set(result["stages"])
    assert result["total_s"] == pytest.approx(statistics.median(r["total"] for r in result["runs"]), abs=2e-3)
    assert f"input {path}" in format_benchmark(result) and "reading the input" in format_benchmark(result)


def test_cli_bench_input_no_uld_writes_json(tiny_ct, tmp_path, capsys):
    volume, path = tiny_ct
    out = tmp_path / "bench.json"
    code = main(["bench", "--input", str(path), "--no-uld", "--repeats", "1", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert CONTRACT_KEYS <= set(result) and result["input"] == str(path)
    assert result["volume_shape_zyx"] == list(volume.shape_zyx) and result["uld"] is False
    assert "universal_lesions" not in result["stages"]
    assert "without ULD" in capsys.readouterr().out


@pytest.mark.parametrize("make_input", [
    lambda tmp: tmp / "missing.nii.gz",                                            # does not exist
    lambda tmp: (tmp / "broken.nii.gz").write_bytes(b"not a CT") and tmp / "broken.nii.gz",  # not a CT
])
def test_cli_bench_bad_input_exits_2_and_writes_nothing(make_input, tmp_path, capsys):
    bad = make_input(tmp_path)
    out = tmp_path / "bench.json"
    assert main(["bench", "--input", str(bad), "--no-uld", "--json", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("lunglesionai: error:") and bad.name in err
    assert not out.exists()
