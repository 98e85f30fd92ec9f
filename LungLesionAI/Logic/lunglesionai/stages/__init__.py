"""lunglesionai.stages."""
