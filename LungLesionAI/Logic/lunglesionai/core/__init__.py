"""lunglesionai.core."""
