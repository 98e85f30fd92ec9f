"""The package's layers: which room (subpackage) may import which. Imports only run downward.

Each room is a subpackage of ``lunglesionai`` (``pipeline`` is the module ``lunglesionai/pipeline.py``); a module
may import from its own room and from rooms on lower levels, plus the few same-level pairs in
:data:`SAME_LEVEL_IMPORTS`. ``Testing/core/test_layers.py`` walks every module's imports (those inside functions too)
and fails on an import this table does not allow, and on an import cycle; README shows the same table.
Standard library only.

Rooms, lowest first (what each holds):

====  ===========  ==============================================================================================
level room         holds
====  ===========  ==============================================================================================
0     core         data model and geometry (Volume, Finding/Report, orientation, segment styles), CT checks and
                   their errors, atomic output folders, the SimpleITK bridge, HU windows, vocabulary, this table
1     io           CT readers (files, DICOM; PET reading to come), output writers (seg.nrrd, mrk.json,
                   report.json/html; DICOM SEG/SR to come)
1     nets         torch modules and the model store (one loader and cache per trained model)
1     synth        the procedural chest-CT phantom
1     datasets     readers of public data (LIDC VOIs, LUNA16, DeepLesion); no network imports
2     stages       one module per pipeline stage (lung mask, detectors, FP reduction, segmentation, measurements,
                   grading, universal lesions, scan coverage; PET uptake to come)
3     pipeline     composes the stages (PipelineConfig, analyze_volume)
3     datagen      composites and synthetic lesions for training and validation
4     clinical     guideline rules (Lung-RADS, Fleischner, Brock), the clinical read, prior/current comparison
5     mrml         the only room that imports ``slicer``: scene building and review actions
5     evaluation   metrics (numpy only) and one protocol per benchmark (LUNA16, LIDC VOIs, DeepLesion, phantom)
6     training     trainers and grader calibration; inference never imports it
7     app          command line, background runner, progress, demo, bench (a server and batch runs to come)
====  ===========  ==============================================================================================
"""

from __future__ import annotations

__all__ = ["LEVELS", "ROOT_MODULES", "SAME_LEVEL_IMPORTS", "allowed", "level_of"]

LEVELS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("io", "nets", "synth", "datasets"),
    ("stages",),
    ("pipeline", "datagen"),
    ("clinical",),
    ("mrml", "evaluation"),
    ("training",),
    ("app",),
)
"""Rooms by level, lowest first; a room may import any room of a lower level."""
SAME_LEVEL_IMPORTS: frozenset[tuple[str, str]] = frozenset({
    ("datasets", "io"),  # public data sets are read with the CT readers
})
"""(importer, imported) pairs allowed between rooms of one level."""
ROOT_MODULES = {"__init__": "core", "__main__": "app"}
"""The room of the package's own top-level modules (``lunglesionai/__init__.py`` re-exports core names)."""


def level_of(room: str) -> int:
    """The level of ``room`` (0 = core).

    Raises:
        KeyError: ``room`` is not in :data:`LEVELS`.
    """
    for level, rooms in enumerate(LEVELS):
        if room in rooms:
            return level
    raise KeyError(f"{room!r} is not a room of the layer table")


def allowed(importer: str, imported: str) -> bool:
    """Whether a module of room ``importer`` may import from room ``imported``.

    Raises:
        KeyError: a room is not in :data:`LEVELS`.

    Example:
        >>> allowed("stages", "core"), allowed("core", "stages"), allowed("datasets", "io")
        (True, False, True)
    """
    if importer == imported:
        return True
    below = level_of(imported) < level_of(importer)
    return below or (importer, imported) in SAME_LEVEL_IMPORTS
