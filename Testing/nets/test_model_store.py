"""The shipped models/ folders: each loads through its class with a matching SHA-256, has both model cards, and
its card names the same weights and operating point as its config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
FOLDERS = sorted(p.name for p in MODELS.iterdir() if p.is_dir()) if MODELS.is_dir() else []


@pytest.mark.parametrize("name", FOLDERS)
def test_model_folder_loads_and_its_cards_agree(name):
    from lunglesionai.nets.model_store import load_model

    folder = MODELS / name
    config = json.loads((folder / "config.json").read_text())
    _, _, sha = load_model(folder, config["format"], "x")  # raises on a checksum mismatch
    card = json.loads((folder / f"{name}.card.json").read_text())
    assert card["architecture"]["weights_sha256"] == sha == config["weights_sha256"]
    text = (folder / f"{name}.card.md").read_text()
    assert sha in text or sha[:8] in text, f"{name}.card.md does not name the shipped weights"
    if "operating_point" in config and "operating_point" in card:
        assert card["operating_point"]["min_score"] == pytest.approx(config["operating_point"]["min_score"])
    assert (folder / config["weights_file"]).stat().st_size < 20e6  # the project's size budget per model


def test_every_model_folder_is_listed_in_the_models_readme():
    readme = (MODELS / "README.md").read_text()
    for name in FOLDERS:
        assert f"`{name}/`" in readme


def test_saved_model_is_atomic_and_its_bytes_depend_only_on_the_weights(tmp_path):
    import torch

    from lunglesionai.core.output_folder import MANIFEST_NAME, read_manifest
    from lunglesionai.nets.model_store import load_model, save_model

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    sha_a = save_model(tmp_path / "a", state, "net.pt", {"format": "toy/1", "note": "first"})
    sha_b = save_model(tmp_path / "b", state, "net.pt", {"format": "toy/1", "note": "second"})
    assert sha_a == sha_b  # the temporary file's random name does not end up in the weights
    config, loaded, sha = load_model(tmp_path / "a", "toy/1", "x")
    assert sha == sha_a and config["weights_sha256"] == sha_a and config["note"] == "first"
    torch.testing.assert_close(loaded["w"], state["w"])
    text = (tmp_path / "a" / "config.json").read_text(encoding="utf-8")
    assert text == json.dumps(config, indent=2) + "\n"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([MANIFEST_NAME, "config.json", "net.pt"])
    assert read_manifest(tmp_path / "a") == {"config.json", "net.pt"}
    with pytest.raises(ValueError):
        save_model(tmp_path / "a", state, "net.pt", {"format": "toy/1", "note": float("nan")})
    assert json.loads((tmp_path / "a" / "config.json").read_text(encoding="utf-8"))["note"] == "first"
    assert not [p.name for p in (tmp_path / "a").iterdir() if ".tmp" in p.name]
