"""Qt/Slicer helpers of the LungLesionAI module that outgrow ``LungLesionAI.py`` (Slicer's ``<Module>Lib`` convention)."""
