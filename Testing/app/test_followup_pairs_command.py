"""``lunglesionai make-followup-pairs`` (issue 16): writes the pair folder format that ``evaluate followup`` reads,
with a per-pair deformation inside the asked range; bad options are refused before anything is written."""

from __future__ import annotations

import json

import pytest

from lunglesionai.app.cli import main
from lunglesionai.datagen.followup_pair_sets import iter_followup_pairs


def test_writes_pairs_with_truth_in_the_issue_format(tmp_path, sitk_one_thread):
    out = tmp_path / "pairs"
    code = main(["make-followup-pairs", "--out", str(out), "--host", "phantom", "--phantom-preset", "small",
                 "--n-pairs", "1", "--seed", "3", "--deformation-mm", "5", "6", "--interval-days", "90"])
    assert code == 0
    case = out / "pair_000"
    assert sorted(p.name for p in case.iterdir()) == ["current.nii.gz", "prior.nii.gz", "truth.json"]
    truth = json.loads((case / "truth.json").read_text())
    assert truth["interval_days"] == 90.0 and truth["host"] == "phantom-small-3"
    assert 5.0 <= truth["deformation_mm"] <= 6.0
    both = [n for n in truth["nodules"] if n["prior_lps_mm"] and n["current_lps_mm"]]
    assert both and any(n["prior_lps_mm"] is None for n in truth["nodules"])  # one new
    assert any(n["current_lps_mm"] is None for n in truth["nodules"])  # one resolved
    assert all(n["current_volume_mm3"] / n["prior_volume_mm3"] == pytest.approx(n["volume_factor"], rel=1e-3)
               for n in both)


def test_bad_requests_are_refused(tmp_path, capsys):
    assert main(["make-followup-pairs", "--out", str(tmp_path / "p"), "--host", "real"]) == 2
    assert "--real-ct" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="deformation_range_mm"):
        next(iter_followup_pairs(1, deformation_range_mm=(10.0, 5.0)))
    with pytest.raises(ValueError, match="n_pairs"):
        next(iter_followup_pairs(0))
