"""lunglesionai.datasets."""
