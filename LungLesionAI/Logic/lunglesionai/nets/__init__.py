"""lunglesionai.nets."""
