"""BrainXAI/BrainXAI.py itself, executed: setup(), enter(), Apply, the poll loop, every widget signal, scene close,
exit() and cleanup(), on slicer-core's real MRML and Slicer's own slicer.util.

Stood in (no Slicer application here): the Qt/CTK/qMRML widgets (built from the .ui file, accepting only the
signals and properties their headers declare), QTimer/QSettings/QFileDialog, slicer.app, Slicer's dialogs, and the
ScriptedLoadableModule / parameterNodeWrapper base layers, which import qt at load time. See slicer_standins.py for
exactly what each stand-in does and the Slicer source it follows. The timer is fired by the test; everything the
module starts (the background PythonSlicer-like child, its files, the scene's nodes) is real.
"""

import importlib.util
import sys
import time
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) provides MRML")
pytest.importorskip("slicer.util")  # Slicer's own util.py, shipped by slicer-core

import slicer_standins as standins  # noqa: E402
from brainxai.mrml import scene as scene_mod  # noqa: E402
from brainxai.explain import METHODS  # noqa: E402
from brainxai.app.panel import NO_RESULT, PARAMETERS, describe, input_caution, method_evidence  # noqa: E402

MODULE = Path(__file__).resolve().parents[1] / "BrainXAI" / "BrainXAI.py"


class Env:
    """A Slicer-like process: real MRML scene, stand-in widget layer, the module file loaded."""

    def __init__(self, monkeypatch, packaging=None):
        self.scene, self.app_logic = scene_mod.headless_scene()
        self.qt = standins.qt_module()
        self.qt.QSettings.store = {"BrainXAI/KeepWorkerWarm": False}  # tests that want a worker ask for one
        self.qt.QFileDialog.answer, self.qt.QFileDialog.asked = "", []
        monkeypatch.setitem(sys.modules, "qt", self.qt)
        monkeypatch.setattr(slicer, "mrmlScene", self.scene, raising=False)
        self.app = standins.App()
        monkeypatch.setattr(slicer, "app", self.app, raising=False)
        self.dialogs = standins.Dialogs()
        for name in ("errorDisplay", "confirmOkCancelDisplay", "showStatusMessage"):
            monkeypatch.setattr(slicer.util, name, getattr(self.dialogs, name))
        for name, module in (("ScriptedLoadableModule", standins.scripted_loadable_module(slicer, str(MODULE))),
                             ("parameterNodeWrapper", standins.parameter_node_wrapper(slicer))):
            monkeypatch.setitem(sys.modules, f"slicer.{name}", module)
            monkeypatch.setattr(slicer, name, module, raising=False)
        if packaging is None:  # Slicer 5.10: there is no slicer.packaging to import
            monkeypatch.delitem(sys.modules, "slicer.packaging", raising=False)
        else:
            monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
        spec = importlib.util.spec_from_file_location("BrainXAI", MODULE)
        self.module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "BrainXAI", self.module)
        spec.loader.exec_module(self.module)
        self.parent = standins.ModuleWidgetParent()

    def widget(self):
        w = self.module.BrainXAIWidget(self.parent)
        w.setup()
        return w

    def enter(self, w):
        self.parent.isEntered = True
        w.enter()

    def run_timer(self, w, stop_at=(), timeout=300):
        """The event loop: the poll timer fires every 50 ms until it stops (or a stage in stop_at is shown)."""
        deadline = time.time() + timeout
        shown = []
        while w.timer.isActive():
            assert time.time() < deadline, shown[-3:]
            w.timer.fire()
            shown.append((w.ui.progressBar.format, w.ui.progressBar.value, w.ui.progressBar.isVisible()))
            if any(s in w.ui.progressBar.format for s in stop_at):
                break
            time.sleep(0.05)
        return shown


@pytest.fixture()
def env(monkeypatch, ixi_path):
    e = Env(monkeypatch)
    e.ixi_path = ixi_path
    e.volume = scene_mod.read_volume(e.scene, ixi_path, "T1 post")
    yield e
    for w in getattr(e, "widgets", []):
        w.cleanup()


def test_setup_enter_apply_poll_result_and_scene_close(env, tmp_path):
    w = env.widget()
    env.widgets = [w]
    ui = w.ui
    assert w.logic is not None and w.controller is not None
    assert w in [s.__self__ for s in env.app.moduleManager().connected]  # cleanup() on module unload
    # the .ui's connections gave the MRML widgets the scene; the first volume was selected
    assert ui.inputSelector.mrmlScene() is env.scene and ui.regionTableView._scene is env.scene
    assert ui.inputSelector.currentNode() is env.volume
    assert [ui.methodComboBox.itemData(i) for i in range(ui.methodComboBox.count)] == list(METHODS)
    assert ui.methodComboBox.currentData == "gradcam++"  # the parameter node's default, not the first item
    assert ui.llmBackendComboBox.currentData == "builtin" and not ui.cloudCheckBox.checked
    assert not ui.llmEndpointLineEdit.enabled  # only for an LLM writer
    ui.llmBackendComboBox.user_select("ollama")
    assert ui.llmEndpointLineEdit.enabled and ui.cloudCheckBox.enabled
    ui.llmEndpointLineEdit.user_type("http://127.0.0.1:11434")
    assert w.logic.getParameterNode().llmEndpoint == "http://127.0.0.1:11434"
    ui.llmBackendComboBox.user_select("builtin")
    assert not ui.thresholdSlider.tracking and not ui.progressBar.isVisible()
    assert (ui.applyButton.text, ui.applyButton.enabled, ui.diagnosisLabel.text) == ("Apply", True, NO_RESULT)
    env.enter(w)
    assert w.logic.session.worker is None  # the setting is off

    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel" and ui.progressBar.isVisible() and w.timer.isActive()
    assert not ui.methodComboBox.enabled and not ui.inputSelector.enabled and not ui.thresholdSlider.enabled
    ui.methodComboBox.user_select("scorecam")  # disabled: the click does nothing
    assert ui.methodComboBox.currentData == "gradcam++"
    shown = env.run_timer(w)
    assert env.dialogs.errors == []
    values = [v for _, v, visible in shown if visible]
    assert values == sorted(values) and any("model" in f for f, _, _ in shown)
    result = w.controller.result
    assert ui.diagnosisLabel.text == describe(result.findings) and result.findings["diagnosis"]["label"] in \
        ui.diagnosisLabel.text
    assert ui.inputCautionLabel.text == input_caution(result.findings)
    assert ui.inputCautionLabel.visible == bool(result.findings["input_check"]["flags"])
    assert ui.methodEvidenceLabel.text == method_evidence(result.findings, "gradcam++") and ui.methodEvidenceLabel.visible
    assert "<html" in ui.reportBrowser.toHtml() and ui.regionTableView.mrmlTableNode() is result.table
    assert ui.applyButton.text == "Apply" and ui.methodComboBox.enabled and ui.mniCheckBox.enabled
    assert not ui.progressBar.isVisible() and not w.timer.isActive()

    ui.thresholdSlider.user_release(97)
    w.thresholdTimer.fire()  # the value settled
    assert "percentile 97" in ui.reportBrowser.toHtml()
    assert w.logic.getParameterNode().threshold == 97.0
    calls = []
    threshold_changed = w.controller.threshold_changed
    w.controller.threshold_changed = lambda v: calls.append(v) or threshold_changed(v)
    for step in (96, 95, 94):  # mouse wheel notches: no release, one valueChanged each
        ui.thresholdSlider.value = step
    assert calls == [] and w.thresholdTimer.isActive()
    w.thresholdTimer.fire()
    assert calls == [94.0] and "percentile 94" in ui.reportBrowser.toHtml()
    table = ui.regionTableView.mrmlTableNode()
    assert ui.regionTableView.mrmlTableNode() is table  # the same table node is not set (and rebuilt) again
    ui.mniCheckBox.click()
    assert result.space == "mni"
    ui.jumpButton.click()
    env.qt.QFileDialog.answer = str(tmp_path)
    ui.exportButton.click()
    assert (tmp_path / "BrainXAI-T1_post" / "findings.json").is_file()
    assert env.dialogs.errors == []

    ui.methodComboBox.user_select("gradcam")  # not computed: a status message, nothing breaks
    assert "not computed" in env.dialogs.statuses[-1]

    # Applying again starts from native space (the input back under its own parent transform)
    ui.applyButton.click()
    assert result.space == "native" and not ui.mniCheckBox.checked and env.volume.GetTransformNodeID() is None
    env.run_timer(w, stop_at=("register", "model"))
    work = w.logic.session.work_dir
    env.scene.Clear(0)  # File > Close Scene: the real StartCloseEvent / EndCloseEvent reach the widget
    assert ui.diagnosisLabel.text == NO_RESULT and ui.reportBrowser.toHtml() == ""
    assert ui.inputCautionLabel.text == "" and not ui.inputCautionLabel.visible
    assert ui.methodEvidenceLabel.text == "" and not ui.methodEvidenceLabel.visible
    assert ui.regionTableView.mrmlTableNode() is None and not ui.mniCheckBox.enabled
    env.run_timer(w, timeout=60)
    assert not work.exists() and env.dialogs.errors == []
    # Closing the scene resets the parameter node; the panel shows its defaults and no input
    assert w.logic.getParameterNode().method == "gradcam++" and ui.methodComboBox.currentData == "gradcam++"
    assert ui.inputSelector.currentNode() is None and not ui.applyButton.enabled


def test_cancel_and_cleanup_from_the_panel(env):
    w = env.widget()
    env.enter(w)
    ui = w.ui
    ui.applyButton.click()
    env.run_timer(w, stop_at=("register", "model"))
    job, work = w.logic.session.job, w.logic.session.work_dir
    t0 = time.time()
    ui.applyButton.click()  # Cancel
    assert time.time() - t0 < 0.5 and not ui.applyButton.enabled
    env.run_timer(w, timeout=60)
    assert "cancelled" in env.dialogs.statuses[-1] and env.dialogs.errors == []
    assert not job.running and not work.exists() and ui.applyButton.text == "Apply"

    ui.applyButton.click()
    env.run_timer(w, stop_at=("preprocess", "register"))
    job, work = w.logic.session.job, w.logic.session.work_dir
    for slot in env.app.moduleManager().connected:  # Slicer unloads the module (exit or reload)
        slot("BrainXAI")
    assert not job.running and not work.exists() and not w.timer.isActive()
    import vtk

    assert not w.hasObserver(w._parameterNode, vtk.vtkCommand.ModifiedEvent, w.onParameterNodeModified)
    assert not w.hasObserver(env.scene, env.scene.StartCloseEvent, w.onSceneStartClose)


def test_exit_stops_following_the_parameter_node_and_enter_resumes(env):
    w = env.widget()
    env.widgets = [w]
    env.enter(w)
    params = w.logic.getParameterNode()
    env.enter(w)
    assert w.logic.getParameterNode() is params  # one wrapper per node: entering again adds no observer
    w.exit()
    params.allMethods = True
    assert not w.ui.allMethodsCheckBox.checked  # not shown while the module is not
    env.enter(w)
    assert w.ui.allMethodsCheckBox.checked
    params.threshold = 95.0  # a script or a loaded scene changes it: the panel follows
    assert w.ui.thresholdSlider.value == 95.0
    params.enhanceMaps = True
    assert w.ui.enhanceCheckBox.checked


def test_keep_warm_setting_is_remembered_per_machine(env):
    from brainxai.app import dependencies

    env.qt.QSettings.store = {}
    first = env.widget()  # nothing chosen yet: on only where the machine has memory to spare
    assert first.ui.keepWarmCheckBox.checked == dependencies.keep_worker_warm_by_default()
    first.cleanup()
    env.qt.QSettings.store = {env.module.KEEP_WARM_SETTING: "false"}  # as QSettings hands back a stored bool
    w = env.widget()
    assert not w.ui.keepWarmCheckBox.checked
    env.widgets = [w]
    env.enter(w)
    w.ui.keepWarmCheckBox.click()
    assert env.qt.QSettings.store[env.module.KEEP_WARM_SETTING] is True
    worker = w.logic.session.worker
    assert worker is not None and worker.alive
    w.ui.keepWarmCheckBox.click()
    assert env.qt.QSettings.store[env.module.KEEP_WARM_SETTING] is False and not worker.alive
    second = env.widget()  # a new session of Slicer reads the choice back
    env.widgets.append(second)
    assert not second.ui.keepWarmCheckBox.checked and not second.controller.keep_worker_warm


def test_parameter_node_fields_match_the_controllers(env):
    cls = env.module.BrainXAIParameterNode
    assert set(cls.allParameters) == set(PARAMETERS)
    node = env.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    p = cls(node)
    assert {k: getattr(p, k) for k in PARAMETERS} == PARAMETERS
    with pytest.raises(ValueError):
        p.method = "lime"  # Choice validator: only methods brainxai has
    with pytest.raises(ValueError):
        p.threshold = 120.0


def test_logic_scripting_api_runs_a_blocking_job(env):
    logic = env.module.BrainXAILogic()
    events = env.app.events
    result = logic.run(env.volume, method="gradcam++", maxCamSlices=2)
    assert env.app.events > events  # the GUI was kept alive while the child worked
    assert result.findings["diagnosis"]["label"] and result.heatmaps["gradcam++"].GetScene() is env.scene
    entry = logic.rethreshold(result, "gradcam++", 95)
    assert entry["threshold_percentile"] == 95
    logic.removeWorkDirs()
    assert not result.out_dir.exists()


@pytest.mark.parametrize("slicer_version", ["5.10", "5.12"])
def test_apply_with_a_missing_package_asks_and_a_no_starts_nothing(monkeypatch, ixi_path, tmp_path, slicer_version):
    """The dependency path through the panel, on Slicer 5.10 (confirmation dialog, then slicer.util.pip_install)
    and 5.12+ (slicer.packaging.pip_ensure with its own dialog); the user says no both times."""
    import types

    calls = []
    packaging = None
    if slicer_version == "5.12":
        packaging = types.ModuleType("slicer.packaging")
        packaging.load_requirements = lambda path: [str(path)]

        def pip_ensure(reqs, prompt_install=True, requester=None, **kwargs):
            calls.append(("pip_ensure", requester))
            raise RuntimeError("User declined package installation")

        packaging.pip_ensure = pip_ensure
    env = Env(monkeypatch, packaging=packaging)
    env.volume = scene_mod.read_volume(env.scene, ixi_path, "T1 post")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("brainxai-no-such-package>=1\n", encoding="utf-8")
    monkeypatch.setattr(env.module, "REQUIREMENTS", str(requirements))
    monkeypatch.setattr(env.module.dependencies, "torch_installed", lambda: True)
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a: calls.append(("pip_install", a)))
    env.dialogs.confirm_answer = False
    w = env.widget()
    w.ui.applyButton.click()
    if slicer_version == "5.10":
        assert "brainxai-no-such-package" in env.dialogs.confirms[0] and calls == []
    else:
        assert calls == [("pip_ensure", "BrainXAI")] and env.dialogs.confirms == []
    assert env.dialogs.errors == [] and w.logic.session.job is None
    assert w.ui.applyButton.enabled and w.ui.applyButton.text == "Apply" and not w.timer.isActive()
    w.cleanup()


def test_brainxai_test_skips_with_the_reason_when_packages_are_missing(env, monkeypatch):
    """CTest runs BrainXAITest in Slicer's testing mode, where nothing gets installed: it must skip, saying why;
    Reload and Test calls runTest() outside a runner, where the skip is shown, not raised as a failure."""
    import io
    import unittest

    monkeypatch.setattr(env.module.dependencies, "torch_installed", lambda: False)
    result = unittest.TextTestRunner(stream=io.StringIO()).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(env.module.BrainXAITest))
    assert result.wasSuccessful() and len(result.skipped) == 1
    assert "not installed (torch" in result.skipped[0][1] and "press Apply" in result.skipped[0][1]
    case = env.module.BrainXAITest()
    case.shown.clear()
    case.runTest()  # ScriptedLoadableModule.runTest's way
    assert case.shown and case.shown[-1].startswith("BrainXAI test skipped: BrainXAI's Python packages")


def test_input_choice_matches_the_selector(env):
    """The selector lists plain scalar volumes only (showChildNodeTypes false): an RGB (vector) volume is neither
    picked by default nor run."""
    from brainxai.errors import BrainXAIError

    env.scene.RemoveNode(env.volume)
    rgb = env.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    plain = scene_mod.read_volume(env.scene, env.ixi_path, "T1 post")
    w = env.widget()
    env.widgets = [w]
    assert w.logic.getParameterNode().inputVolume is plain
    with pytest.raises(BrainXAIError, match="'photo' is a VectorVolumeNode"):
        w.logic.start(rgb)


def test_developer_reload_reimports_the_brainxai_package(env, monkeypatch):
    """Slicer's Reload re-executes BrainXAI.py only: edits under BrainXAI/Logic/brainxai must be picked up too."""
    import brainxai.app.panel  # noqa: F401

    for name in [n for n in sys.modules if n == "brainxai" or n.startswith("brainxai.")]:
        monkeypatch.setitem(sys.modules, name, sys.modules[name])  # put back after the test
    w = env.widget()
    env.widgets = [w]
    w.onReload()
    assert w.reloads[-1] == "BrainXAI"
    assert not [n for n in sys.modules if n == "brainxai" or n.startswith("brainxai.")]
