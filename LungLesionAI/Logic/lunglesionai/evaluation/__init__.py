"""lunglesionai.evaluation.metrics.luna16_hits."""
