"""lunglesionai.mrml.scene."""
