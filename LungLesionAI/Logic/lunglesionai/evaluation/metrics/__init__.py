"""lunglesionai.evaluation.metrics."""
