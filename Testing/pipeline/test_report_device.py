"""``Report.device`` says where the learned stages ran, not a constant."""

from __future__ import annotations

import numpy as np

from lunglesionai import pipeline
from lunglesionai.core.volume import Volume
from lunglesionai.stages.nodule_detection import DetectionResult


def _chest(spacing_z: float = 2.0) -> Volume:
    hu = np.full((12, 40, 40), -1000.0)
    hu[:, 4:36, 4:36] = 40.0
    hu[:, 10:30, 8:18] = hu[:, 10:30, 22:32] = -850.0
    hu += np.random.default_rng(0).normal(0.0, 10.0, hu.shape)
    return Volume(hu.astype(np.int16), (3.0, 3.0, spacing_z), (0.0, 0.0, 0.0))


def test_report_device_is_the_detectors(monkeypatch):
    ran_on = []

    def detect(volume, lung_mask, config):
        return DetectionResult([], {"detection": "stub for the device plumbing"}, device=ran_on[-1])

    monkeypatch.setattr(pipeline, "detect_nodules", detect)
    config = pipeline.PipelineConfig(grade=False, fpr=False)
    for device in ("cpu", "cuda"):
        ran_on.append(device)
        assert pipeline.analyze_volume(_chest(), config).device == device
