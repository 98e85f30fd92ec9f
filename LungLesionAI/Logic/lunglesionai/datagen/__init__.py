"""lunglesionai.datagen."""
