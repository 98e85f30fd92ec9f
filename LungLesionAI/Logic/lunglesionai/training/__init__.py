"""lunglesionai.training."""
