"""Shared pytest fixtures. Data from ../shared is optional: tests that need it skip with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (absent: a fresh clone has no ../shared)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder; skips when absent."""
    return shared_path()


@pytest.fixture(scope="module")
def sitk_one_thread():
    """SimpleITK filters of the using module run on one thread (the machine is shared, and only one-thread
    registrations repeat exactly); the previous setting is restored afterwards."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
