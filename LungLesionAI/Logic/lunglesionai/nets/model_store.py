"""Trained-model folders: ``config.json`` + one weights file whose SHA-256 the config records.

Every learned stage (grader, detector, false-positive reduction) lives in its own folder under the models root:
``$LUNGLESIONAI_MODELS`` when set; else ``models/`` inside the installed package (where the Slicer extension puts
the weights); else ``<repo>/models`` (the package is ``LungLesionAI/Logic/lunglesionai/`` in the source tree):
:func:`models_root` is the one place that decides. Files are
written to a temporary name and renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from lunglesionai.core.output_folder import record_in_manifest, write_file_atomic, write_json_atomic

MODELS_ENV = "LUNGLESIONAI_MODELS"
"""Environment variable naming the models folder (each model in its own sub-folder)."""
CONFIG_FILE = "config.json"


class ModelFileError(RuntimeError):
    """A model folder is missing, incomplete, of another format, or its weights do not match the recorded SHA-256."""


_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../lunglesionai


def models_root() -> Path:
    """The folder holding one sub-folder per trained model: ``$LUNGLESIONAI_MODELS`` when set; else ``models/``
    inside the installed package (the Slicer extension installs it there); else the source checkout's ``models/``
    (``<repo>/LungLesionAI/Logic/lunglesionai`` → ``<repo>/models``)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    installed = _PACKAGE_DIR / "models"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parents[2] / "models"


def model_dir(name: str) -> Path:
    """The folder of model ``name`` (e.g. "detector") under :func:`models_root`."""
    return models_root() / name


def save_model(folder: str | os.PathLike, state_dict: dict, weights_file: str, config: dict[str, Any]) -> str:
    """Write ``weights_file`` (a torch state_dict) and ``config.json`` (``config`` plus ``weights_file`` and
    ``weights_sha256``) into ``folder`` (created when missing), each atomically, and list both in the folder's
    manifest (:func:`lunglesionai.core.output_folder.record_in_manifest`; the model card beside them is not listed).
    Equal state dicts give equal weight files (same bytes, same SHA-256), whatever the folder or process.

    Returns:
        The weights' SHA-256 (hex).

    Raises:
        ValueError: ``config`` holds a NaN or an infinite float (JSON refuses them; the weights are written by
            then, the old ``config.json`` stays).
        TypeError: ``config`` holds a value JSON cannot represent.
        OSError: ``folder`` cannot be created or written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest: list[str] = []

    def write_weights(tmp: Path) -> None:
        # Through a file object: torch.save names the zip's top folder after a *path* it is given (here the
        # random temporary name), which would make equal weights differ in bytes and SHA-256; a stream gets
        # torch's fixed "archive".
        with open(tmp, "wb") as stream:
            torch.save(state_dict, stream)
        digest.append(hashlib.sha256(tmp.read_bytes()).hexdigest())

    write_file_atomic(folder / weights_file, write_weights)
    sha = digest[0]
    full = {**config, "weights_file": weights_file, "weights_sha256": sha}
    write_json_atomic(folder / CONFIG_FILE, full)
    record_in_manifest(folder, [weights_file, CONFIG_FILE], command="train")
    return sha


def load_model(folder: str | os.PathLike, expected_format: str, train_command: str,
               *, verify_sha256: bool = True) -> tuple[dict[str, Any], dict, str]:
    """Read ``config.json`` and the weights it names, checking format and SHA-256.

    Args:
        folder: the model folder.
        expected_format: the config's required ``format`` value (e.g. "lunglesionai-detector/1").
        train_command: the command that makes such a folder, quoted in the error when it is missing.
        verify_sha256: compare the weights' SHA-256 with the config's ``weights_sha256``.

    Returns:
        (config dict, state_dict on CPU, SHA-256 hex of the weights).

    Raises:
        ModelFileError: missing folder/config/weights, invalid JSON, other format, checksum mismatch.
    """
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFileError(f"{config_path}: no model config; train one with `{train_command}`, or point "
                             f"{MODELS_ENV} at a models folder holding {folder.name}/")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{config_path}: not valid JSON ({exc})") from exc
    if config.get("format") != expected_format:
        raise ModelFileError(f"{config_path}: format {config.get('format')!r}, expected {expected_format!r}")
    weights_path = folder / str(config.get("weights_file", ""))
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: weights named in {config_path} are missing")
    data = weights_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if verify_sha256 and sha != config.get("weights_sha256"):
        raise ModelFileError(f"{weights_path}: SHA-256 {sha} differs from {config.get('weights_sha256')} in "
                             f"{config_path}")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ModelFileError(f"{weights_path}: cannot read the weights ({exc})") from exc
    return config, state, sha
