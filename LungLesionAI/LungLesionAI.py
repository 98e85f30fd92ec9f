"""LungLesionAI: find, outline and measure lung nodules in a chest CT (3D Slicer scripted module).

The work is done by the ``lunglesionai`` package, which the extension installs beside this file; this file holds
the module metadata, the GUI (Widget), the MRML logic and the self-test. Requires Slicer 5.8 or later.
"""

import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS_PATH = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
#: Compute devices offered in the GUI ("auto" picks CUDA when available; classical stages always run on CPU).
DEVICES = ("auto", "cpu", "cuda")


#
# LungLesionAI
#


class LungLesionAI(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Lung Lesion AI")
        self.parent.categories = [_("Chest Imaging Platform")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["LungLesionAI developers"]
        self.parent.helpText = _(
            "Finds lung nodules in a chest CT, outlines each one in 3D and measures it (diameter, axes, volume, "
            "mean HU, texture). Results appear as a segmentation (one segment per nodule, DICOM terminology), "
            "a point list (one point per nodule) and, for other lesions, ROI boxes; all can be reviewed and "
            "edited. The same analysis runs without Slicer: <code>lunglesionai analyze CT -o OUT</code>. "
            "Research use only: not a medical device. "
            'See the <a href="https://github.com/lunglesionai/SlicerLungLesionAI">project page</a>.'
        )
        self.parent.acknowledgementText = _(
            "Nodule data used to develop and check this module come from the LIDC-IDRI collection: "
            "Armato SG III et al., The Lung Image Database Consortium (LIDC) and Image Database Resource "
            "Initiative (IDRI): a completed reference database of lung nodules on CT scans, Medical Physics "
            "38(2):915-931, 2011, doi:10.1118/1.3528204; hosted by The Cancer Imaging Archive (Clark K et al., "
            "J Digit Imaging 26:1045-1057, 2013, doi:10.1007/s10278-013-9622-7), licensed CC BY 3.0."
        )


#
# Python requirements
#


def ensurePythonRequirements() -> None:
    """Install the package's Python dependencies when missing (may prompt; call from the GUI, not the Logic).

    Uses ``slicer.packaging.pip_ensure`` (Slicer 5.12+), else ``slicer.util.pip_install`` for the requirements
    of ``Resources/requirements.txt`` whose distribution is not installed.
    """
    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(packaging.load_requirements(REQUIREMENTS_PATH), requester="LungLesionAI")
        return
    from importlib import metadata

    missing = []
    for requirement in _readRequirementLines(REQUIREMENTS_PATH):
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    if missing:
        slicer.util.pip_install(missing)


def _readRequirementLines(path: str) -> list:
    with open(path, encoding="utf-8") as file:
        lines = (line.split("#", 1)[0].strip() for line in file)
        return [line for line in lines if line]


def importLungLesionAI():
    """Import the ``lunglesionai`` package: installed beside this file, or ``Logic/`` of a source checkout."""
    try:
        import lunglesionai
    except ModuleNotFoundError as error:
        initPath = os.path.join(MODULE_DIR, "Logic", "__init__.py")
        if error.name != "lunglesionai" or not os.path.exists(initPath):
            raise
        spec = importlib.util.spec_from_file_location(
            "lunglesionai", initPath, submodule_search_locations=[os.path.dirname(initPath)]
        )
        lunglesionai = importlib.util.module_from_spec(spec)
        sys.modules["lunglesionai"] = lunglesionai
        spec.loader.exec_module(lunglesionai)
    return lunglesionai


#
# LungLesionAIParameterNode
#


@parameterNodeWrapper
class LungLesionAIParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume: the chest CT (HU).
    runDetection: find nodule candidates (needed by every later stage).
    runSegmentation: show each nodule's 3D outline as a segment (otherwise points only).
    sensitivity: 1 keeps every candidate; lower values drop candidates whose detection score is below
        1 - sensitivity.
    device: compute device for deep-learning stages.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    runDetection: bool = True
    runSegmentation: bool = True
    sensitivity: Annotated[float, WithinRange(0.0, 1.0)] = 1.0
    device: Annotated[str, Choice(list(DEVICES))] = "auto"


#
# LungLesionAIWidget
#


class LungLesionAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: binds the .ui to the parameter node and runs the logic on Apply."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungLesionAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LungLesionAILogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = ""
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: LungLesionAIParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        params = self._parameterNode
        if not (params and params.inputVolume):
            reason = _("Select a CT volume")
        elif not params.runDetection:
            reason = _("Switch on nodule detection: every later stage starts from it")
        else:
            reason = ""
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or _("Analyse the input volume")

    def onApplyButton(self) -> None:
        params = self._parameterNode
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Checking Python packages…")
        self.ui.applyButton.enabled = False  # no second run while events are processed during this one
        succeeded = False
        with slicer.util.tryWithErrorDisplay(_("Lung lesion analysis failed."), waitCursor=True):
            ensurePythonRequirements()
            nodes = self.logic.process(
                params.inputVolume,
                runDetection=params.runDetection,
                runSegmentation=params.runSegmentation,
                sensitivity=params.sensitivity,
                device=params.device,
                progressCallback=self._onProgress,
            )
            slicer.util.setSliceViewerLayers(background=params.inputVolume, fit=True)
            logger.info("LungLesionAI result nodes: %s", nodes)
            succeeded = True
        self._checkCanApply()
        if succeeded:
            count = len(self.logic.lastReport.nodules())
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = _("Found {count} nodule(s): see the segmentation and the point list.").format(
                count=count
            )
        else:
            self.ui.statusLabel.text = _("Analysis failed (details in the error message and the log).")

    def _onProgress(self, stage: str, fraction: float) -> None:
        self.ui.progressBar.value = round(100 * fraction)
        self.ui.statusLabel.text = _("Running: {stage}").format(stage=stage.replace("_", " "))
        slicer.app.processEvents()


#
# LungLesionAILogic
#


class LungLesionAILogic(ScriptedLoadableModuleLogic):
    """Runs the ``lunglesionai`` pipeline on a volume node and adds the results to its scene (no GUI calls)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        #: The Report of the last :meth:`process` call (LPS geometry, findings with masks), or None.
        self.lastReport = None

    def getParameterNode(self) -> LungLesionAIParameterNode:
        return LungLesionAIParameterNode(super().getParameterNode())

    def process(
        self,
        inputVolumeNode,
        runDetection: bool = True,
        runSegmentation: bool = True,
        sensitivity: float = 1.0,
        device: str = "auto",
        progressCallback: Callable[[str, float], None] | None = None,
    ):
        """Analyse a CT volume node and add a segmentation, nodule points and lesion boxes to its scene.

        Args:
            inputVolumeNode: vtkMRMLScalarVolumeNode in HU.
            runDetection: must be True (every later stage starts from detected candidates).
            runSegmentation: add each finding's mask as a segment; False gives points only.
            sensitivity: in [0, 1]; candidates with detection score below 1 - sensitivity are dropped.
            device: one of :data:`DEVICES`; used by stages that support it.
            progressCallback: ``callback(stage, fraction)``, fraction of the whole run in [0, 1].

        Returns:
            ``lunglesionai.mrml.ResultNodes`` (node ids; the Report is kept in :attr:`lastReport`).

        Raises:
            ValueError: missing input, detection switched off, or an argument out of range.
        """
        if inputVolumeNode is None or inputVolumeNode.GetImageData() is None:
            raise ValueError("Input volume is missing or has no image data")
        if not runDetection:
            raise ValueError("Detection must run: segmentation and grading start from detected nodules")
        if not 0.0 <= sensitivity <= 1.0:
            raise ValueError(f"sensitivity must be in [0, 1], got {sensitivity}")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        importLungLesionAI()
        from lunglesionai import mrml
        from lunglesionai.pipeline import analyze_volume

        startTime = time.perf_counter()
        volume = mrml.volume_from_volume_node(inputVolumeNode)
        report = analyze_volume(volume, self._pipelineConfig(sensitivity, device), progress=progressCallback)
        if not runSegmentation:
            report = replace(report, findings=[replace(f, mask=None) for f in report.findings])
        scene = inputVolumeNode.GetScene() or slicer.mrmlScene
        nodes = mrml.add_report_to_scene(
            scene, report, reference_volume_node=inputVolumeNode, name_prefix=inputVolumeNode.GetName()
        )
        self.lastReport = report
        logger.info(
            "LungLesionAI: %d finding(s) in %.1f s", len(report.findings), time.perf_counter() - startTime
        )
        return nodes

    @staticmethod
    def _pipelineConfig(sensitivity: float, device: str):
        """PipelineConfig from the GUI settings. v0's stages are all classical and run on the CPU, so ``device``
        is accepted and validated but has no effect yet."""
        from lunglesionai.pipeline import PipelineConfig

        return PipelineConfig(min_score=round(1.0 - sensitivity, 6))


#
# LungLesionAITest
#


class LungLesionAITest(ScriptedLoadableModuleTest):
    """Self-test: analyse a small synthetic chest phantom and check the nodes against the phantom's truth."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_PhantomNodulesBecomeSegmentsAndPoints()

    def test_PhantomNodulesBecomeSegmentsAndPoints(self) -> None:
        import numpy as np

        self.delayDisplay("Making a small chest phantom")
        importLungLesionAI()
        from lunglesionai import mrml
        from lunglesionai.synth import PhantomConfig, make_phantom

        phantom = make_phantom(PhantomConfig.small())
        volumeNode = mrml.volume_node_from_volume(slicer.mrmlScene, phantom.volume, "PhantomCT")

        self.delayDisplay("Analysing")
        logic = LungLesionAILogic()
        nodes = logic.process(volumeNode)
        report = logic.lastReport
        segmentation = slicer.mrmlScene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation()
        points = slicer.mrmlScene.GetNodeByID(nodes.nodules_markups_node_id)

        masked = [f for f in report.findings if f.mask is not None]
        self.assertEqual(segmentation.GetNumberOfSegments(), len(masked))
        self.assertEqual(points.GetNumberOfControlPoints(), len(report.nodules()))
        pointsLps = np.array([mrml.ras_to_lps(points.GetNthControlPointPosition(n))[0]
                              for n in range(points.GetNumberOfControlPoints())]).reshape(-1, 3)
        centres = np.array([f.center_lps_mm for f in report.nodules()]).reshape(-1, 3)
        np.testing.assert_allclose(pointsLps, centres, atol=1e-3)

        hits = 0
        for nodule in phantom.nodules:
            distances = np.linalg.norm(pointsLps - np.asarray(nodule.center_lps_mm), axis=1)
            hits += int(distances.size > 0 and distances.min() <= nodule.diameter_mm / 2)
        logger.info("LungLesionAI self-test: %d of %d phantom nodules found", hits, len(phantom.nodules))
        self.assertGreater(hits, 0, "no phantom nodule was found")
        self.delayDisplay("Test passed")
