"""LungLesionAI: find, outline and measure lung nodules in a chest CT (3D Slicer scripted module).

The work is done by the ``lunglesionai`` package, which the extension installs beside this file. The analysis runs in
a background process (``PythonSlicer -m lunglesionai analyze …``, see ``lunglesionai.app.background``) so the GUI never
freezes; the Widget polls it on a timer, Cancel ends its process tree. All MRML work is in the Logic (through
``lunglesionai.mrml.review`` and ``lunglesionai.mrml.scene``); the Widget only binds the panel to it. Requires Slicer 5.8 or later.

Scripting (Slicer's Python console)::

    logic = slicer.util.getModuleLogic("LungLesionAI")
    result = logic.process(volumeNode, stages=("detection", "segmentation", "grading"), device="auto")
    result.nodes.table_node_id, [f.id for f in result.findings]
"""

import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from LungLesionAILib.install import ensurePythonRequirements
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
#: In a source checkout the package is ``Logic/lunglesionai``; the extension installs it beside this file instead.
SOURCE_PACKAGE_PARENT = os.path.join(MODULE_DIR, "Logic")
if os.path.isdir(os.path.join(SOURCE_PACKAGE_PARENT, "lunglesionai")) and SOURCE_PACKAGE_PARENT not in sys.path:
    sys.path.insert(0, SOURCE_PACKAGE_PARENT)
#: Compute devices offered in the GUI: "auto" uses a CUDA GPU when there is one; classical stages run on the CPU.
DEVICES = ("auto", "cpu", "cuda")
DEVICE_LABELS = ("Auto (GPU when available)", "CPU", "GPU (CUDA)")
#: Stages a run can include. Detection is required; "lesions" is universal lesion detection (reported "not run" when
#: no ULD model is installed).
STAGES = ("detection", "fp_reduction", "segmentation", "grading", "lesions")
DEFAULT_STAGES = ("detection", "fp_reduction", "segmentation", "grading")
#: Default operating point: the FP-reduction model's (models/fpr/config.json "operating_point": about one finding
#: per held-out real scan); 0 keeps every candidate. See README. While the slider stays at this value the panel
#: sends no operating point, so the model default of the stages that run applies (the FP reduction's, or without
#: it the learned detector's own).
DEFAULT_MIN_SCORE = 0.70
#: Indications of the clinical read (``lunglesionai analyze --indication``): Lung-RADS v2022 for screening,
#: Fleischner 2017 as well for incidental nodules.
INDICATIONS = ("screening", "incidental")
#: Panel choices for values not given ("" = from the DICOM header, else the read's stated default).
SEX_CHOICES = ("", "F", "M")
FAMILY_HISTORY_CHOICES = ("", "yes", "no")
STAGE_TITLES = {
    "lung_mask": _("Finding the lungs"),
    "detection": _("Detecting nodules"),
    "fp_reduction": _("Removing false positives"),
    "segmentation": _("Outlining nodules"),
    "measurement": _("Measuring"),
    "grading": _("Grading"),
    "uld": _("Finding other lesions"),
}


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
            "Finds lung nodules and masses (lesions over 30 mm) in a chest CT, outlines each one in 3D and measures "
            "it (diameter, axes, volume, mean HU, texture; for nodules also malignancy and invasiveness surrogate: "
            "masses are not graded). Results appear as a segmentation (one segment per nodule or mass, DICOM "
            "terminology), a point list and a findings table; click a row to go to the finding, "
            "accept or reject it, correct its outline in Segment Editor and press <b>Update measurements</b>. "
            "<b>Save report</b> writes the reviewed result with an HTML report. The analysis runs in the background "
            "(Cancel stops it). The same analysis runs without Slicer: <code>lunglesionai analyze CT -o OUT</code>. "
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


def chosenOperatingPoint(sliderValue: float) -> float | None:
    """The operating point the panel sends: None while the slider stays at :data:`DEFAULT_MIN_SCORE` (the models'
    own default then applies, also with FP reduction off), else the value the user chose."""
    return None if abs(float(sliderValue) - DEFAULT_MIN_SCORE) < 1e-9 else float(sliderValue)


def importLungLesionAI():
    """Import the ``lunglesionai`` package with a plain import: installed beside this file by the extension, or
    found in ``Logic/`` of a source checkout (added to ``sys.path`` at load time, see :data:`SOURCE_PACKAGE_PARENT`)."""
    import lunglesionai

    return lunglesionai


#
# LungLesionAIParameterNode
#


@parameterNodeWrapper
class LungLesionAIParameterNode:
    """Settings of the panel, saved with the scene.

    inputVolume: the chest CT (HU).
    priorVolume: an earlier CT of the same patient, or None: each nodule is compared with it (issue 16).
    intervalDays: days between the prior and the input; 0 = from the DICOM StudyDate of both.
    runDetection: find nodule candidates (required: every later stage starts from them).
    runFpReduction: discard false-positive candidates.
    runSegmentation: show each finding's 3D outline as a segment (otherwise points only).
    runGrading: malignancy probability, texture and invasiveness surrogate.
    runLesions: universal lesion detection: other lesions anywhere in the scan, as ROI boxes (experimental, off by
        default: many false positives on real scans).
    device: "auto", "cpu" or "cuda" for the deep-learning stages.
    minScore: operating point, the lowest finding score kept: 0.70 (default) is the FP-reduction model's documented
        operating point; 0 keeps every candidate (most sensitive, most false positives).
    indication: "screening" (Lung-RADS) or "incidental" (Fleischner applies too).
    patientAge: years; 0 = not given (DICOM PatientAge of the input, else the read's default, reported as assumed).
    patientSex: "F", "M" or "" (not given: DICOM PatientSex, else the default).
    familyHistory: "yes", "no" or "" (not given: the default, reported as assumed).
    resultTable: the findings table shown in the panel.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    priorVolume: vtkMRMLScalarVolumeNode
    intervalDays: Annotated[float, WithinRange(0.0, 36500.0)] = 0.0
    runDetection: bool = True
    runFpReduction: bool = True
    runSegmentation: bool = True
    runGrading: bool = True
    runLesions: bool = False
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    minScore: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_MIN_SCORE
    indication: Annotated[str, Choice(list(INDICATIONS))] = "screening"
    patientAge: Annotated[float, WithinRange(0.0, 130.0)] = 0.0
    patientSex: Annotated[str, Choice(list(SEX_CHOICES))] = ""
    familyHistory: Annotated[str, Choice(list(FAMILY_HISTORY_CHOICES))] = ""
    resultTable: vtkMRMLTableNode


#
# LungLesionAIWidget
#


class LungLesionAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node, starts/cancels the background run, forwards review actions."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._selectedFindingId = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungLesionAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.findingsTableView.setMRMLScene(slicer.mrmlScene)
        self.ui.resultTableSelector.addAttribute("vtkMRMLTableNode", "LungLesionAI.Result", "1")
        self.logic = LungLesionAILogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.findingsTableView.connect("clicked(QModelIndex)", self.onFindingClicked)
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.onReview("accepted"))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.onReview("rejected"))
        self.ui.resetReviewButton.connect("clicked(bool)", lambda: self.onReview("proposed"))
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onOpenInSegmentEditor)
        self.ui.updateMeasurementsButton.connect("clicked(bool)", self.onUpdateMeasurements)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.ui.loadResultsButton.connect("clicked(bool)", self.onLoadResults)
        self.ui.applyAxisEditButton.connect("clicked(bool)", self.onApplyAxisEdit)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = ""
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Use the module's parameter node; pick the first volume as input when none is set."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the panel to a parameter node (None unbinds it)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            for index, label in enumerate(DEVICE_LABELS):  # readable names; the values stay DEVICES
                self.ui.deviceComboBox.setItemText(index, label)
            for combo in (self.ui.patientSexComboBox, self.ui.familyHistoryComboBox):  # "" = not given
                combo.setItemText(0, _("from DICOM / default"))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    def _stages(self) -> list:
        params = self._parameterNode
        chosen = {"detection": params.runDetection, "fp_reduction": params.runFpReduction,
                  "segmentation": params.runSegmentation, "grading": params.runGrading, "lesions": params.runLesions}
        return [stage for stage in STAGES if chosen[stage]]

    def updateGUI(self, caller=None, event=None) -> None:
        """Enable and label the buttons from the parameters, the run and the selected finding."""
        params = self._parameterNode
        running = self._job is not None
        if running:
            reason = ""
        elif not (params and params.inputVolume):
            reason = _("Select a CT volume")
        elif params.priorVolume is not None and params.priorVolume == params.inputVolume:
            reason = _("The prior scan must be another volume than the chest CT")
        else:
            reason = self.logic.stagesProblem(self._stages())
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or (_("Stop the analysis") if running else _("Analyse the input volume"))
        table = params.resultTable if params else None
        if self.ui.findingsTableView.mrmlTableNode() != table:
            self.ui.findingsTableView.setMRMLTableNode(table)
            self._selectedFindingId = None
            self._showExamSummary()
        haveFinding = table is not None and self._selectedFindingId is not None
        for button in (self.ui.acceptButton, self.ui.rejectButton, self.ui.resetReviewButton,
                       self.ui.segmentEditorButton, self.ui.updateMeasurementsButton, self.ui.applyAxisEditButton):
            button.enabled = haveFinding and not running
        self.ui.loadResultsButton.enabled = not running
        self.ui.saveReportButton.enabled = table is not None and not running
        self.ui.selectedFindingLabel.text = (
            _("Selected: {id}").format(id=self._selectedFindingId) if haveFinding else _("Click a row to select a finding")
        )

    # ------------------------------------------------------------------------------------------------- running
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancelRun()
            return
        params = self._parameterNode
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Checking Python packages…")
        with slicer.util.tryWithErrorDisplay(_("The analysis could not start."), waitCursor=True):
            ensurePythonRequirements()
            self._job = self.logic.startAnalysis(
                params.inputVolume, stages=self._stages(), device=params.device,
                minScore=chosenOperatingPoint(params.minScore), indication=params.indication,
                patient=self._patientValues(), priorVolumeNode=params.priorVolume,
                intervalDays=params.intervalDays or None,
            )
            self.ui.statusLabel.text = _("Starting…")
            self._timer.start()
        if self._job is None:
            self.ui.statusLabel.text = _("The analysis did not start (see the message).")
        self.updateGUI()

    def onPoll(self) -> None:
        """Timer slot: show progress; when the run ends, load the results or show its one error message."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        status = job.poll()
        self.ui.progressBar.value = round(100 * status.fraction)
        if not status.finished:
            stage = STAGE_TITLES.get(status.stage, status.stage)
            self.ui.statusLabel.text = (stage or _("Starting…")) + f" ({time.monotonic() - job.startedAt:.0f} s)"
            return
        self._timer.stop()
        self._job = None
        state = status.state.value
        if state == "done":
            self.ui.statusLabel.text = _("Loading results…")
            loaded = None
            with slicer.util.tryWithErrorDisplay(_("The results could not be loaded."), waitCursor=True):
                loaded = self.logic.finishAnalysis(job)
                self._parameterNode.resultTable = slicer.mrmlScene.GetNodeByID(loaded.nodes.table_node_id)
                slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=True)
            self.ui.statusLabel.text = (
                self.logic.resultSummary(loaded) if loaded is not None
                else _("The results could not be loaded (see the message).")
            )
        elif state == "failed":
            self.logic.discardAnalysis(job)
            self.ui.statusLabel.text = _("The analysis failed.")
            slicer.util.errorDisplay(_("Lung lesion analysis failed:") + "\n" + (status.error or ""),
                                     detailedText=job.stderrText)
        else:
            self.logic.discardAnalysis(job)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        self.updateGUI()

    def _patientValues(self) -> dict:
        """The panel's patient fields; empty ones stay None (the DICOM header or the read's default decide)."""
        params = self._parameterNode
        return {"age_years": params.patientAge or None, "sex": params.patientSex or None,
                "family_history": None if not params.familyHistory else params.familyHistory == "yes"}

    def onInputVolumeChanged(self, node) -> None:
        """Prefill age and sex from the DICOM database when the new input came from DICOM and they are empty."""
        params = self._parameterNode
        if node is None or params is None:
            return
        values = self.logic.dicomPatientValues(node)
        if not params.patientAge and values.get("age_years"):
            params.patientAge = values["age_years"]
        if not params.patientSex and values.get("sex"):
            params.patientSex = values["sex"]

    def _cancelRun(self) -> None:
        if self._job is not None:
            self.ui.statusLabel.text = _("Cancelling…")
            self._job.cancel()
            self.onPoll()

    # ------------------------------------------------------------------------------------------------- review
    def _results(self):
        return self.logic.resultsFromTable(self._parameterNode.resultTable)

    def onFindingClicked(self, index) -> None:
        findingId = index.sibling(index.row(), 0).data()
        with slicer.util.tryWithErrorDisplay(_("Could not go to the finding.")):
            if not self.logic.showFindingInBothScans(self._results(), findingId):
                ras = self.logic.findingPositionRas(self._results(), findingId)
                slicer.modules.markups.logic().JumpSlicesToLocation(*ras, True)
            self._selectedFindingId = findingId
        self.updateGUI()

    def onReview(self, status: str) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not change the review state.")):
            self.logic.setReviewStatus(self._results(), self._selectedFindingId, status)
        self._showExamSummary()
        self.updateGUI()

    def onOpenInSegmentEditor(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not open Segment Editor.")):
            results = self._results()
            segmentationNode = slicer.mrmlScene.GetNodeByID(results.segmentation_node_id)
            volumeNode = slicer.mrmlScene.GetNodeByID(results.volume_node_id)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(segmentationNode)
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(volumeNode)
            else:  # Slicer < 5.2
                editor.setMasterVolumeNode(volumeNode)
            if segmentationNode.GetSegmentation().GetSegment(self._selectedFindingId) is not None:
                editor.setCurrentSegmentID(self._selectedFindingId)

    def onUpdateMeasurements(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not update the measurements."), waitCursor=True):
            finding = self.logic.updateMeasurements(self._results(), self._selectedFindingId)
            self.ui.statusLabel.text = _("{id} measured again: {summary}").format(id=finding.id,
                                                                                 summary=finding.summary())
        self._showExamSummary()
        self.updateGUI()

    def _showExamSummary(self) -> None:
        table = self._parameterNode.resultTable if self._parameterNode else None
        text = ""
        if table is not None:
            with slicer.util.tryWithErrorDisplay(_("Could not read the exam summary.")):
                text = self.logic.examSummary(self._results())
        self.ui.examSummaryLabel.text = text

    def onApplyAxisEdit(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not apply the axis edit."), waitCursor=True):
            finding = self.logic.applyAxisEdit(self._results(), self._selectedFindingId)
            self.ui.statusLabel.text = _("{id}: axes {long:.1f} x {short:.1f} mm, Lung-RADS {category}").format(
                id=finding.id, long=finding.long_axis_mm, short=finding.short_axis_mm,
                category=finding.lung_rads or "-")
        self._showExamSummary()
        self.updateGUI()

    def onLoadResults(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("LungLesionAI output folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
            loaded = self.logic.loadResults(folder)
            self._parameterNode.resultTable = slicer.mrmlScene.GetNodeByID(loaded.nodes.table_node_id)
            self.ui.statusLabel.text = self.logic.resultSummary(loaded)
        self.updateGUI()

    def onSaveReport(self) -> None:
        parent = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder to save the report in"))
        if not parent:
            return
        results = self._results()
        volumeName = slicer.mrmlScene.GetNodeByID(results.volume_node_id).GetName()
        folder = os.path.join(parent, re.sub(r"[^\w.-]+", "_", f"{volumeName}-LungLesionAI"))
        if os.path.exists(folder) and not slicer.util.confirmYesNoDisplay(
            _("{folder} exists. Replace it?").format(folder=folder)
        ):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not save the report."), waitCursor=True):
            paths = self.logic.saveReport(results, folder, overwrite=True)
            self.ui.statusLabel.text = _("Saved to {folder}").format(folder=folder)
            if "report_html" in paths:
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(paths["report_html"])))


#
# LungLesionAILogic
#


@dataclass
class LungLesionAIResult:
    """What :meth:`LungLesionAILogic.process` returns.

    Args:
        nodes: ``lunglesionai.mrml.review.SceneResults``: ids of the table, segmentation, points, lesion boxes and volume.
        report: ``lunglesionai.core.findings.Report`` (LPS mm; findings with masks on the volume's grid).
    """

    nodes: object
    report: object

    @property
    def findings(self) -> list:
        """The findings (``lunglesionai.core.findings.Finding``), in report order."""
        return list(self.report.findings)


class AnalysisJob:
    """A background analysis started by :meth:`LungLesionAILogic.startAnalysis` (poll it, cancel it)."""

    def __init__(self, background, tempDir: str, outputDir: str, volumeNodeID: str, keepMasks: bool,
                 clinicalInputs: tuple | None = None, priorVolumeNodeID: str | None = None) -> None:
        self.background = background
        self.tempDir = tempDir
        self.outputDir = outputDir
        self.volumeNodeID = volumeNodeID
        self.keepMasks = keepMasks
        #: (patient values given: dict of PatientInfo fields, indication) sent to the analysis.
        self.clinicalInputs = clinicalInputs
        #: The prior scan's volume node id (``--prior``), or None.
        self.priorVolumeNodeID = priorVolumeNodeID
        self.startedAt = time.monotonic()

    def poll(self):
        """``lunglesionai.app.background.AnalysisStatus``: state, stage, fraction, error; never blocks."""
        return self.background.poll()

    def cancel(self):
        """End the analysis process tree; returns the final status."""
        return self.background.cancel()

    @property
    def stderrText(self) -> str:
        """The child's last stderr lines (details for an error message)."""
        return self.background.stderr_text


class LungLesionAILogic(ScriptedLoadableModuleLogic):
    """Runs the analysis in a background process and turns its results into nodes; review actions (no GUI calls)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        #: The Report of the last finished analysis, or None.
        self.lastReport = None

    def getParameterNode(self) -> LungLesionAIParameterNode:
        return LungLesionAIParameterNode(super().getParameterNode())

    @staticmethod
    def stagesProblem(stages: Iterable) -> str:
        """Why a stage selection cannot run ("" when it can)."""
        stages = set(stages)
        unknown = stages - set(STAGES)
        if unknown:
            return _("Unknown stages: {names}; choose from {all}").format(names=sorted(unknown), all=list(STAGES))
        if "detection" not in stages:
            return _("Switch on nodule detection: every later stage starts from it")
        return ""

    def startAnalysis(self, inputVolumeNode, stages: Iterable = DEFAULT_STAGES, device: str = "auto",
                      minScore: float | None = None, indication: str = "screening",
                      patient: dict | None = None, priorVolumeNode=None,
                      intervalDays: float | None = None) -> AnalysisJob:
        """Start analysing a CT volume node in a background process; returns at once.

        The volume's voxels and geometry (world LPS) are written to a temporary NRRD that ``lunglesionai analyze``
        reads. Poll the returned job; :meth:`finishAnalysis` adds the results to the scene.

        Args:
            inputVolumeNode: vtkMRMLScalarVolumeNode in HU.
            stages: names from :data:`STAGES`; "detection" is required.
            device: one of :data:`DEVICES`.
            minScore: operating point in [0, 1] (lowest detection score kept); None: the default of the models
                that run (``lunglesionai analyze`` without ``--min-score``).
            indication: "screening" or "incidental" (the clinical read, decision support).
            patient: given patient values, keys of ``lunglesionai.app.background.analyze_arguments``
                (``age_years``, ``sex``, ``family_history``, ``emphysema``, ``immunocompromised``,
                ``known_cancer``); None values and absent keys: from the DICOM database (age, sex; the analysis
                itself reads a temporary NRRD without a header), else the read's default, listed as assumed.
            priorVolumeNode: an earlier CT of the same patient (``analyze --prior``): each nodule is compared with
                it; after the run both scans are shown side by side (:meth:`finishAnalysis`).
            intervalDays: days between the prior and the input; None: from the DICOM StudyDate of both volumes
                (:meth:`dicomIntervalDays`).

        Raises:
            ValueError: missing input, unusable stages, device, operating point, indication or patient value; a
                prior without an interval (no days given and no StudyDate on both), or the input itself as prior.
        """
        if inputVolumeNode is None or inputVolumeNode.GetImageData() is None:
            raise ValueError("Input volume is missing or has no image data")
        stages = list(stages)
        problem = self.stagesProblem(stages)
        if problem:
            raise ValueError(problem)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if minScore is not None and not 0.0 <= float(minScore) <= 1.0:
            raise ValueError(f"minScore must be in [0, 1], got {minScore}")
        importLungLesionAI()
        from lunglesionai.app.background import BackgroundAnalysis, clinical_arguments
        from lunglesionai.io.ct_files import save_volume
        from lunglesionai.mrml import scene as mrml

        given = {key: value for key, value in (patient or {}).items() if value is not None}
        for key, value in self.dicomPatientValues(inputVolumeNode).items():
            given.setdefault(key, value)
        clinical_arguments(indication=indication, **given)  # bad values raise here, before any file is written
        if priorVolumeNode is not None:
            if priorVolumeNode.GetImageData() is None or priorVolumeNode is inputVolumeNode:
                raise ValueError("The prior scan must be another CT volume with image data")
            if intervalDays is None:
                intervalDays = self.dicomIntervalDays(priorVolumeNode, inputVolumeNode)
            if intervalDays is None:
                raise ValueError("No interval to the prior scan: neither volume has a DICOM StudyDate; enter the "
                                 "days since the prior")

        base = slicer.app.temporaryPath if hasattr(slicer, "app") else None
        tempDir = tempfile.mkdtemp(prefix="LungLesionAI-", dir=base)
        try:
            inputPath = os.path.join(tempDir, "input.nrrd")
            save_volume(mrml.volume_from_volume_node(inputVolumeNode), inputPath, compress=False)
            priorPath = None
            if priorVolumeNode is not None:
                priorPath = os.path.join(tempDir, "prior.nrrd")
                save_volume(mrml.volume_from_volume_node(priorVolumeNode), priorPath, compress=False)
            outputDir = os.path.join(tempDir, "out")
            background = BackgroundAnalysis.start(
                inputPath,
                outputDir,
                python=self.pythonExecutable(),
                min_score=None if minScore is None else float(minScore),
                fp_reduction="fp_reduction" in stages,
                grading="grading" in stages,
                lesions="lesions" in stages,
                device=device,
                indication=indication,
                prior=priorPath,
                interval_days=intervalDays if priorVolumeNode is not None else None,
                **given,
            )
        except BaseException:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        logger.info("LungLesionAI: started %s", " ".join(background.argv[:2] + background.argv[-8:]))
        return AnalysisJob(background, tempDir, outputDir, inputVolumeNode.GetID(), "segmentation" in stages,
                           (given, indication),
                           priorVolumeNode.GetID() if priorVolumeNode is not None else None)

    @staticmethod
    def dicomPatientValues(volumeNode) -> dict:
        """``{"age_years": …, "sex": …}`` from the DICOM database for a volume loaded from DICOM (keys absent when
        unknown; {} for other volumes or without a DICOM database, e.g. outside the Slicer application)."""
        database = getattr(slicer, "dicomDatabase", None)
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []
        if database is None or not uids:
            return {}
        importLungLesionAI()
        from lunglesionai.clinical.patient import parse_dicom_age, parse_dicom_sex

        fileName = database.fileForInstance(uids[0])
        values = {"age_years": parse_dicom_age(database.fileValue(fileName, "0010,1010")),
                  "sex": parse_dicom_sex(database.fileValue(fileName, "0010,0040"))}
        return {key: value for key, value in values.items() if value is not None}

    @staticmethod
    def dicomIntervalDays(priorVolumeNode, volumeNode) -> float | None:
        """Days between the StudyDate of two volumes loaded from DICOM (None when either has none, or outside the
        Slicer application).

        Raises:
            ValueError: the prior study is later than the current one.
        """
        database = getattr(slicer, "dicomDatabase", None)
        if database is None:
            return None
        importLungLesionAI()
        from lunglesionai.clinical.followup import interval_days_from_study_dates

        dates = []
        for node in (priorVolumeNode, volumeNode):
            uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
            text = database.fileValue(database.fileForInstance(uids[0]), "0008,0020") if uids else ""
            dates.append({"study_date": f"{text[:4]}-{text[4:6]}-{text[6:8]}"} if len(text) == 8 else {})
        return interval_days_from_study_dates(*dates)

    @staticmethod
    def pythonExecutable() -> str:
        """The Python that runs the analysis: ``PythonSlicer`` inside Slicer (whose ``sys.executable`` is the
        application), else this interpreter."""
        return shutil.which("PythonSlicer") or sys.executable

    def finishAnalysis(self, job: AnalysisJob, scene=None) -> LungLesionAIResult:
        """Add a finished analysis to the scene (all or nothing) and remove its temporary files.

        Raises:
            RuntimeError: the run failed (its error line) or was cancelled; the scene is unchanged.
            ValueError: the input volume left the scene, or its grid changed since the start.
        """
        from lunglesionai.clinical.patient import PatientInfo
        from lunglesionai.mrml import clinical_actions, prior_scan, results_folder

        scene = scene or slicer.mrmlScene
        try:
            status = job.poll()
            if status.state.value != "done":
                raise RuntimeError(status.error or f"the analysis is {status.state.value}")
            volumeNode = scene.GetNodeByID(job.volumeNodeID)
            if volumeNode is None:
                raise ValueError("The input volume was removed from the scene during the analysis")
            results, report = results_folder.load_outputs_into_scene(scene, job.outputDir, volumeNode,
                                                                     keep_masks=job.keepMasks)
            if job.clinicalInputs is not None:  # kept so that edits are read again with the same values
                given, indication = job.clinicalInputs
                clinical_actions.set_clinical_inputs(scene, results, PatientInfo(**given), indication, reread=False)
            priorNode = scene.GetNodeByID(job.priorVolumeNodeID) if job.priorVolumeNodeID else None
            if priorNode is not None:
                self.showPrior(results, prior_scan.add_prior_to_scene(
                    scene, priorNode, prior_scan.prior_findings_of_folder(job.outputDir, priorNode)), scene)
        finally:
            self.discardAnalysis(job)
        self.lastReport = report
        logger.info("LungLesionAI: %d finding(s) in %.1f s", len(report.findings), time.monotonic() - job.startedAt)
        return LungLesionAIResult(results, report)

    @staticmethod
    def discardAnalysis(job: AnalysisJob) -> None:
        """Cancel the job if it still runs and delete its temporary folder."""
        if not job.poll().finished:
            job.cancel()
        shutil.rmtree(job.tempDir, ignore_errors=True)

    def process(self, inputVolumeNode, stages: Iterable = DEFAULT_STAGES, device: str = "auto",
                minScore: float | None = None, progressCallback: Callable[[str, float], None] | None = None,
                timeoutSeconds: float | None = None) -> LungLesionAIResult:
        """Analyse a CT volume node and add the results to its scene; blocks until done (for scripts and tests).

        The analysis runs in a background process as in the panel; events are processed while waiting.

        Args:
            inputVolumeNode: vtkMRMLScalarVolumeNode in HU.
            stages: names from :data:`STAGES` ("detection" required; default: all nodule stages).
            device: "auto", "cpu" or "cuda".
            minScore: operating point in [0, 1] (0 keeps every candidate); None (default): the models' own default
                (0.70 with FP reduction, see :data:`DEFAULT_MIN_SCORE`).
            progressCallback: ``callback(stage, fraction)`` while it runs.
            timeoutSeconds: cancel and raise TimeoutError after this long.

        Returns:
            :class:`LungLesionAIResult`: node ids (``result.nodes``) and the findings (``result.findings``).

        Raises:
            ValueError: bad arguments. RuntimeError: the analysis failed (its error message). TimeoutError.
        """
        job = self.startAnalysis(inputVolumeNode, stages, device, minScore)
        try:
            while not (status := job.poll()).finished:
                if progressCallback is not None:
                    progressCallback(status.stage, status.fraction)
                if timeoutSeconds is not None and time.monotonic() - job.startedAt > timeoutSeconds:
                    raise TimeoutError(f"LungLesionAI analysis still running after {timeoutSeconds} s")
                if hasattr(slicer, "app"):
                    slicer.app.processEvents()
                time.sleep(0.1)
        except BaseException:
            self.discardAnalysis(job)
            raise
        return self.finishAnalysis(job, inputVolumeNode.GetScene())

    # ------------------------------------------------------------------------------------------------- review
    @staticmethod
    def resultsFromTable(tableNode):
        """``SceneResults`` of a findings table (raises ValueError for other tables)."""
        importLungLesionAI()
        from lunglesionai.mrml import review

        return review.SceneResults.from_table_node(tableNode)

    @staticmethod
    def setReviewStatus(results, findingId: str, status: str):
        """Accept ("accepted"), reject ("rejected") or reset ("proposed") a finding in table, markups and report."""
        from lunglesionai.mrml import review

        return review.set_review_status(slicer.mrmlScene, results, findingId, status)

    @staticmethod
    def updateMeasurements(results, findingId: str):
        """Measure a finding again from its (edited) segment; returns the updated Finding."""
        from lunglesionai.mrml import review

        return review.update_measurements(slicer.mrmlScene, results, findingId)

    @staticmethod
    def findingPositionRas(results, findingId: str):
        """RAS position (mm) to centre the slice views on a finding."""
        from lunglesionai.mrml import review

        return [float(v) for v in review.finding_position_ras(slicer.mrmlScene, results, findingId)]

    @staticmethod
    def showFindingInBothScans(results, findingId: str) -> bool:
        """With a prior scan (the result's report has ``exam.prior``): centre the current view (Red) on the finding
        and the prior view (Yellow) on its matched prior finding; returns False (nothing done) without a prior."""
        from lunglesionai.mrml import prior_scan, review

        report = review.read_report(slicer.mrmlScene, results, with_masks=False)
        if not report.exam.get("prior"):
            return False
        prior_scan.jump_to_finding_in_both(slicer.mrmlScene, results, findingId)
        return True

    @staticmethod
    def showPrior(results, priorNodes, scene=None) -> bool:
        """Show the current CT (Red) and the prior CT (Yellow) side by side with their outlines (False when the
        scene has no such views)."""
        from lunglesionai.mrml import prior_scan

        scene = scene or slicer.mrmlScene
        return prior_scan.show_prior_beside_current(scene, scene.GetNodeByID(results.volume_node_id), priorNodes,
                                                    results.segmentation_node_id)

    @staticmethod
    def resultSummary(result: LungLesionAIResult) -> str:
        """Status text of a loaded result: the finding count, or "not searched" when no lung was found, and every
        warning of the report (``lunglesionai.stages.scan_coverage.result_summary``)."""
        from lunglesionai.stages.scan_coverage import result_summary

        return result_summary(len(result.findings), list(result.report.warnings))

    @staticmethod
    def saveReport(results, folder: str, overwrite: bool = False) -> dict:
        """Write the reviewed result (files of ``lunglesionai analyze`` plus report.html) into ``folder``."""
        from lunglesionai.mrml import results_folder

        return results_folder.save_report(slicer.mrmlScene, results, folder, overwrite=overwrite)

    def loadResults(self, folder: str, volumeNode=None) -> LungLesionAIResult:
        """Open a saved output folder again (table, categories, review decisions, outlines, axis lines; with a prior
        scan also the prior CT and its outlines, side by side).

        Args:
            folder: written by ``lunglesionai analyze`` or :meth:`saveReport`.
            volumeNode: the analysed CT; None: the scene's volume on the report's grid.

        Raises:
            FileNotFoundError: no report.json. ValueError: the analysed CT is not in the scene (load it first).
        """
        importLungLesionAI()
        from lunglesionai.mrml import prior_scan, results_folder

        results, report = results_folder.load_results(slicer.mrmlScene, folder, volumeNode)
        priorNodes = prior_scan.load_prior_of_folder(slicer.mrmlScene, folder, report)  # None without a prior
        if priorNodes is not None:
            self.showPrior(results, priorNodes)
        return LungLesionAIResult(results, report)

    @staticmethod
    def applyAxisEdit(results, findingId: str):
        """Take a nodule's dragged long/short-axis lines as its diameters and read the category again; returns the
        updated Finding."""
        from lunglesionai.mrml import clinical_actions

        return clinical_actions.apply_axis_edit(slicer.mrmlScene, results, findingId)

    @staticmethod
    def examSummary(results) -> str:
        """The exam summary shown at the top of the results (Lung-RADS, Fleischner, emphysema, nodules, assumed
        values, the decision-support note)."""
        from lunglesionai.mrml import clinical_actions

        return clinical_actions.exam_summary(slicer.mrmlScene, results)


#
# LungLesionAITest
#


class LungLesionAITest(ScriptedLoadableModuleTest):
    """Self-tests: a phantom (no download) checked against its ground truth; SampleData CTChest when online."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_PhantomResultsAgreeWithGroundTruth, self.test_ReviewActions,
                     self.test_PanelRunAndCancel, self.test_SampleDataCTChest):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"Skipped {test.__name__}: {reason}")

    def _phantomVolumeNode(self):
        importLungLesionAI()
        from lunglesionai.mrml import scene as mrml
        from lunglesionai.synth import PhantomConfig, make_phantom

        phantom = make_phantom(PhantomConfig.small())
        return phantom, mrml.volume_node_from_volume(slicer.mrmlScene, phantom.volume, "PhantomCT")

    def test_PhantomResultsAgreeWithGroundTruth(self) -> None:
        import numpy as np

        self.delayDisplay("Making a small chest phantom")
        phantom, volumeNode = self._phantomVolumeNode()
        from lunglesionai.mrml import scene as mrml

        self.delayDisplay("Analysing in the background")
        result = LungLesionAILogic().process(volumeNode, timeoutSeconds=600)
        nodes, findings = result.nodes, result.findings
        segmentation = slicer.mrmlScene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation()
        points = slicer.mrmlScene.GetNodeByID(nodes.nodules_markups_node_id)
        table = slicer.mrmlScene.GetNodeByID(nodes.table_node_id)

        masked = [f for f in findings if f.mask is not None]
        self.assertGreater(len(masked), 0)
        self.assertEqual(segmentation.GetNumberOfSegments(), len(masked))
        for number, finding in enumerate([f for f in findings if f.kind == "nodule" and f.mask is not None], 1):
            segment = segmentation.GetSegment(finding.id)
            self.assertIsNotNone(segment)
            self.assertTrue(segment.GetName().startswith("Nodule "))
            tag = vtk.reference("")
            self.assertTrue(segment.GetTag("TerminologyEntry", tag))
            self.assertIn("SCT^27925004^Nodule", str(tag))
        lungFindings = [f for f in findings if f.kind in ("nodule", "mass")]
        self.assertEqual(points.GetNumberOfControlPoints(), len(lungFindings))
        self.assertEqual(table.GetNumberOfRows(), len(findings))
        self.assertEqual([table.GetCellText(row, 0) for row in range(table.GetNumberOfRows())],
                         [f.id for f in findings])
        pointsLps = np.array([mrml.ras_to_lps(points.GetNthControlPointPosition(n))[0]
                              for n in range(points.GetNumberOfControlPoints())]).reshape(-1, 3)
        centres = np.array([f.center_lps_mm for f in lungFindings]).reshape(-1, 3)
        np.testing.assert_allclose(pointsLps, centres, atol=1e-3)
        hits = 0
        for nodule in phantom.nodules:
            distances = np.linalg.norm(pointsLps - np.asarray(nodule.center_lps_mm), axis=1)
            hits += int(distances.size > 0 and distances.min() <= nodule.diameter_mm / 2)
        logger.info("LungLesionAI self-test: %d of %d phantom nodules found", hits, len(phantom.nodules))
        self.assertGreaterEqual(hits, len(phantom.nodules) // 2, "fewer than half of the phantom nodules found")
        self.delayDisplay("Phantom test passed")

    def test_ReviewActions(self) -> None:
        _phantom, volumeNode = self._phantomVolumeNode()
        logic = LungLesionAILogic()
        result = logic.process(volumeNode, timeoutSeconds=600)
        first = result.findings[0].id
        logic.setReviewStatus(result.nodes, first, "rejected")
        table = slicer.mrmlScene.GetNodeByID(result.nodes.table_node_id)
        statusColumn = table.GetColumnIndex("status")
        self.assertEqual(table.GetCellText(0, statusColumn), "rejected")
        updated = logic.updateMeasurements(result.nodes, first)
        self.assertEqual(updated.extra["mask_source"], "edited")
        folder = os.path.join(slicer.app.temporaryPath, "LungLesionAITest-report")
        paths = logic.saveReport(result.nodes, folder, overwrite=True)
        self.assertTrue(os.path.isfile(paths["report_html"]))
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Review test passed")

    def test_PanelRunAndCancel(self) -> None:
        """Through the panel: Apply turns into Cancel; a cancelled run adds nothing; a finished one fills the table."""
        _phantom, volumeNode = self._phantomVolumeNode()
        slicer.util.selectModule("LungLesionAI")
        widget = slicer.modules.LungLesionAIWidget
        widget._parameterNode.inputVolume = volumeNode
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        widget.ui.applyButton.click()
        self.assertIsNone(widget._job)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        widget.ui.applyButton.click()
        deadline = time.monotonic() + 600
        while widget._job is not None and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertIsNone(widget._job)
        self.assertIsNotNone(widget._parameterNode.resultTable)
        self.assertGreater(widget.ui.findingsTableView.model().rowCount(), 0)
        self.delayDisplay("Panel test passed")

    def test_SampleDataCTChest(self) -> None:
        """Real chest CT from SampleData; skipped cleanly when the network is not there."""
        try:
            socket.create_connection(("github.com", 443), timeout=5).close()
        except OSError:
            self.skipTest("no network: SampleData CTChest cannot be downloaded")
        import SampleData

        try:
            volumeNode = SampleData.downloadSample("CTChest")
        except Exception as error:
            self.skipTest(f"SampleData CTChest could not be downloaded: {error}")
        result = LungLesionAILogic().process(volumeNode, timeoutSeconds=900)
        table = slicer.mrmlScene.GetNodeByID(result.nodes.table_node_id)
        self.assertEqual(table.GetNumberOfRows(), len(result.findings))
        segmentation = slicer.mrmlScene.GetNodeByID(result.nodes.segmentation_node_id)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(),
                         len([f for f in result.findings if f.mask is not None]))
        self.delayDisplay(f"CTChest: {len(result.findings)} finding(s)")
