"""lunglesionai.app."""
