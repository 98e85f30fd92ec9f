"""lunglesionai.stages.universal_lesions."""
