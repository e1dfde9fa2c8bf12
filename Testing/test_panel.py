"""The Slicer panel's decisions (brainxai.app.panel) on slicer-core's real MRML, with real background runs.

The widget layer is a recording Host (what the panel would show); the parameter node is a real
vtkMRMLScriptedModuleNode behind the parameterNodeWrapper stand-in of slicer_standins.py.
"""

import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) provides MRML")

from brainxai.mrml import scene as scene_mod  # noqa: E402
from brainxai.app.panel import (NO_RESULT, PARAMETERS, PanelController, describe, input_caution,  # noqa: E402
                                method_evidence)
from brainxai.app.session import ExplainSession  # noqa: E402
from slicer_standins import parameter_node_wrapper  # noqa: E402


class Host:
    def __init__(self):
        self.errors, self.statuses, self.folder, self.controller = [], [], None, None

    def update(self):
        self.last = self.controller.view()

    def error(self, text):
        assert "\n" not in text, text
        self.errors.append(text)

    def status(self, text):
        self.statuses.append(text)

    def choose_folder(self, title):
        return self.folder


def make_params(scene):
    pnw = parameter_node_wrapper(slicer)

    @pnw.parameterNodeWrapper
    class Params:
        inputVolume: slicer.vtkMRMLScalarVolumeNode
        method: str = PARAMETERS["method"]
        allMethods: bool = PARAMETERS["allMethods"]
        enhanceMaps: bool = PARAMETERS["enhanceMaps"]
        threshold: float = PARAMETERS["threshold"]
        llmBackend: str = PARAMETERS["llmBackend"]
        llmEndpoint: str = PARAMETERS["llmEndpoint"]

    return Params(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "BrainXAI"))


@pytest.fixture()
def panel(ixi_path):
    scene, app = scene_mod.headless_scene()
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # one slice view's layers
    volume = scene_mod.read_volume(scene, ixi_path, "T1 post")
    params = make_params(scene)
    params.inputVolume = volume
    host = Host()
    installs = []
    controller = PanelController(ExplainSession(scene), params, host, lambda: installs.append(1) or True,
                                 lambda: True)
    host.controller = controller
    yield scene, controller, host, volume, composite
    controller.cleanup()
    del app


def wait_for(controller, stages=None, timeout=300):
    """Poll as the widget's timer does; stop early once one of `stages` is reported."""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        if not controller.poll():
            return seen
        seen.append(controller.progress)
        if stages and controller.progress[0] in stages:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no end after {timeout} s: {seen[-3:]}")


def test_apply_progress_result_and_every_result_action(panel, tmp_path):
    scene, controller, host, volume, composite = panel
    v = controller.view()
    assert (v.apply_text, v.apply_enabled, v.settings_enabled, v.progress_visible, v.diagnosis) == (
        "Apply", True, True, False, NO_RESULT)
    before = volume.GetMTime()
    controller.params.enhanceMaps = True
    controller.apply()
    assert "--enhance" in controller.session.job.command  # the panel's setting reaches the background run
    v = controller.view()
    assert (v.apply_text, v.apply_enabled, v.polling, v.progress_visible) == ("Cancel", True, True, True)
    assert not v.settings_enabled and not v.result_actions_enabled  # the method selector is locked mid-run
    controller.params.method = "gradcam"  # a script changes it anyway: the run's own method is shown
    seen = wait_for(controller)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and {"register", "model"} <= {s for s, _ in seen}
    assert host.errors == [] and controller.result is not None
    r = controller.result
    nodes = scene.GetNumberOfNodes()
    assert controller.poll() is False and scene.GetNumberOfNodes() == nodes  # a late tick reads nothing twice
    v = controller.view()
    assert (v.apply_text, v.settings_enabled, v.progress_visible, v.polling) == ("Apply", True, False, False)
    assert v.diagnosis == describe(r.findings) and r.findings["diagnosis"]["label"] in v.diagnosis
    assert v.input_caution == input_caution(r.findings)
    assert v.method_evidence == method_evidence(r.findings, "gradcam++") and "Without its region" in v.method_evidence
    assert "<html" in v.report_html and v.table is r.table and v.mni_enabled
    assert controller.params.method == "gradcam++" and set(r.heatmaps) == {"gradcam++"}
    assert composite.GetForegroundVolumeID() == r.heatmaps["gradcam++"].GetID()
    assert composite.GetLabelVolumeID() == r.masks["gradcam++"].GetID()
    assert volume.GetMTime() == before

    controller.params.method = "gradcam"  # not computed: said, nothing changes
    controller.method_changed()
    assert "Grad-CAM was not computed" in host.statuses[-1]
    assert composite.GetForegroundVolumeID() == r.heatmaps["gradcam++"].GetID()
    controller.params.method = "gradcam++"
    controller.method_changed()
    assert controller.params.threshold == 90.0  # the slider shows the method's percentile

    from vtk.util.numpy_support import vtk_to_numpy

    def mask_voxels():
        return int(vtk_to_numpy(r.masks["gradcam++"].GetImageData().GetPointData().GetScalars()).sum())

    at90 = mask_voxels()
    controller.threshold_changed(97.0)
    assert mask_voxels() < at90 and "percentile 97" in controller.view().report_html
    stamp = r.masks["gradcam++"].GetMTime()
    controller.threshold_changed(97.0)  # the same value again (the widget echoing the parameter node): no work
    assert r.masks["gradcam++"].GetMTime() == stamp and controller.params.threshold == 97.0

    controller.set_space(True)
    assert r.space == "mni" and controller.view().mni_checked
    assert volume.GetTransformNodeID() == r.to_mni.GetID()
    controller.set_space(False)
    assert r.space == "native" and volume.GetTransformNodeID() is None

    statuses = len(host.statuses)
    controller.jump()
    assert len(host.statuses) == statuses  # there is a lesion to jump to

    controller.export()  # the folder dialog was cancelled
    assert host.errors == [] and list(tmp_path.iterdir()) == []
    host.folder = str(tmp_path)
    controller.export()
    exported = tmp_path / "BrainXAI-T1_post"
    assert (exported / "findings.json").is_file() and "exported" in host.statuses[-1]
    assert "percentile 97" in (exported / "report.md").read_text(encoding="utf-8")  # as it now stands
    controller.export()
    assert "exists" in host.errors[-1]

    work = controller.session.work_dirs[:]
    assert work and all(w.is_dir() for w in work)
    controller.scene_closing()  # File > Close Scene: nothing of this patient stays on screen
    v = controller.view()
    assert (v.diagnosis, v.report_html, v.table, v.mni_enabled, v.result_actions_enabled) == (
        NO_RESULT, "", None, False, False)
    assert not any(w.exists() for w in work)


def test_cancel_returns_at_once_and_keeps_nothing(panel):
    scene, controller, host, _, _ = panel
    nodes = scene.GetNumberOfNodes()
    controller.apply()
    wait_for(controller, stages=("register", "load_model", "model"))
    assert controller.running
    work = controller.session.work_dir
    t0 = time.time()
    controller.apply()  # the same button is Cancel now
    assert time.time() - t0 < 0.5
    v = controller.view()
    assert v.apply_text == "Cancel" and not v.apply_enabled and v.apply_tooltip == "Cancelling..."
    assert "cancelling" in v.progress_text
    wait_for(controller, timeout=60)
    assert host.errors == [] and "cancelled" in host.statuses[-1]
    assert controller.result is None and not work.exists() and controller.session.work_dirs == []
    assert scene.GetNumberOfNodes() == nodes
    assert controller.view().apply_text == "Apply" and controller.view().apply_enabled


def test_a_killed_background_process_is_one_message_and_the_next_apply_works(panel):
    """The OOM killer (or a crash) ends the child mid-run: one line, the scene as it was, Apply works again."""
    import os
    import signal

    scene, controller, host, _, _ = panel
    nodes = scene.GetNumberOfNodes()
    controller.apply()
    wait_for(controller, stages=("register", "load_model", "model"))
    os.killpg(controller.session.job._proc.pid, signal.SIGKILL)
    wait_for(controller, timeout=60)
    assert len(host.errors) == 1 and "was killed (SIGKILL, perhaps out of memory)" in host.errors[0], host.errors
    assert controller.result is None and controller.session.work_dirs == [] and scene.GetNumberOfNodes() == nodes
    assert controller.view().apply_text == "Apply" and controller.view().apply_enabled
    controller.apply()
    wait_for(controller, timeout=600)
    assert len(host.errors) == 1 and controller.result is not None


def test_a_failed_run_is_one_line_and_leaves_nothing(panel):
    scene, controller, host, _, _ = panel
    tiny = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny scan")
    from vtk.util.numpy_support import numpy_to_vtk
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 4)
    image.GetPointData().SetScalars(numpy_to_vtk(np.random.default_rng(0).random(256).astype(np.float32), deep=1))
    tiny.SetAndObserveImageData(image)
    controller.params.inputVolume = tiny
    controller.apply()
    wait_for(controller, timeout=120)
    assert len(host.errors) == 1 and "tiny_scan.nrrd is too small" in host.errors[0]
    assert controller.result is None and controller.session.work_dirs == []


def test_scene_close_mid_run_cancels_and_drops_the_run(panel):
    scene, controller, host, _, _ = panel
    controller.apply()
    wait_for(controller, stages=("register", "load_model", "model"))
    work = controller.session.work_dir
    controller.scene_closing()
    assert controller.view().diagnosis == NO_RESULT and controller.session.job.cancelled
    assert work.exists() or not controller.running  # never removed under a running child
    wait_for(controller, timeout=60)
    assert host.errors == [] and controller.result is None and not work.exists()


def test_input_that_cannot_run(panel):
    scene, controller, host, _, _ = panel
    controller.params.inputVolume = None
    assert not controller.view().apply_enabled and "Select" in controller.view().apply_tooltip
    controller.apply()
    assert "Select the contrast-enhanced T1" in host.errors[-1] and controller.session.job is None
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")  # a node with no image
    controller.params.inputVolume = empty
    controller.apply()
    assert "holds no image" in host.errors[-1] and controller.session.job is None


def test_dependencies_declined_or_installing(panel):
    _, controller, host, _, _ = panel
    seen = []

    def ensure():  # what the user sees while pip runs, and a second click meanwhile
        seen.append(controller.view())
        controller.apply()
        return False  # declined (or failed: dependencies.ensure has shown why)

    controller.ensure_dependencies = ensure
    controller.apply()
    assert len(seen) == 1, "a second click started a second install"
    assert not seen[0].apply_enabled and not seen[0].settings_enabled and "Installing" in seen[0].apply_tooltip
    assert controller.session.job is None and controller.view().apply_enabled and not controller.installing


def test_llm_settings_reach_the_run_and_cloud_is_opt_in(panel):
    _, controller, host, _, _ = panel
    assert not controller.view().llm_options_enabled  # built-in writer: no endpoint, no cloud box
    controller.params.llmBackend = "vllm"
    controller.params.llmEndpoint = " http://127.0.0.1:9/v1 "
    assert controller.view().llm_options_enabled
    for cloud in (False, True):
        controller.allow_cloud = cloud
        controller.apply()
        job = controller.session.job
        assert job.command[job.command.index("--llm") + 1] == "vllm"
        assert ("--allow-cloud" in job.command) is cloud
        assert job.env["BRAINXAI_LLM_BASE_URL"] == "http://127.0.0.1:9/v1"
        assert job.env.get("BRAINXAI_LLM_ALLOW_CLOUD") == (None if cloud else "0")
        controller.apply()  # cancel
        wait_for(controller, timeout=60)
    controller.params.llmBackend = "builtin"
    controller.apply()
    assert "--llm" not in controller.session.job.command
    controller.apply()
    wait_for(controller, timeout=60)
    assert host.errors == []


def test_warm_worker_only_when_asked_and_installed(panel):
    _, controller, _, _, _ = panel
    controller.enter()
    assert controller.session.worker is None  # off unless asked
    controller.set_keep_worker_warm(True)
    worker = controller.session.worker
    assert worker is not None and worker.alive
    controller.set_keep_worker_warm(False)
    assert controller.session.worker is None and not worker.alive
    controller.dependencies_installed = lambda: False
    controller.set_keep_worker_warm(True)
    assert controller.session.worker is None  # nothing to warm before the packages are installed


def test_cleanup_runs_every_step_even_if_one_fails(panel, monkeypatch):
    _, controller, _, _, _ = panel
    controller.apply()
    wait_for(controller, stages=("preprocess", "register"))
    job, work = controller.session.job, controller.session.work_dir

    def broken():
        raise RuntimeError("worker could not be closed")

    monkeypatch.setattr(controller.session, "close_worker", broken)
    with pytest.raises(RuntimeError):
        controller.cleanup()
    monkeypatch.undo()
    assert not job.running and not work.exists() and controller.session.work_dirs == []


def test_parameters_are_saved_with_the_scene_and_no_cloud_opt_in(panel, tmp_path):
    scene, controller, _, volume, _ = panel
    p = controller.params
    p.method, p.allMethods, p.threshold, p.llmBackend, p.llmEndpoint = "scorecam", True, 95.0, "llama", "http://x"
    controller.allow_cloud = True
    path = tmp_path / "scene.mrml"
    scene.SetURL(str(path))
    scene.Commit()
    text = path.read_text(encoding="utf-8")
    assert "scorecam" in text and "cloud" not in text.lower()
    again = slicer.vtkMRMLScene()
    again.SetURL(str(path))
    assert again.Connect()
    node = again.GetFirstNodeByName("BrainXAI")
    assert node is not None and node.IsA("vtkMRMLScriptedModuleNode")
    q = type(p)(node)
    assert (q.method, q.allMethods, q.threshold, q.llmBackend, q.llmEndpoint) == (
        "scorecam", True, 95.0, "llama", "http://x")
    assert q.inputVolume is not None and q.inputVolume.GetName() == volume.GetName()


def test_export_refuses_a_missing_folder(tmp_path):
    from brainxai.errors import BrainXAIError
    from brainxai.app.session import export, safe_name

    class Result:
        input_node, out_dir = None, tmp_path

    with pytest.raises(BrainXAIError, match="not a folder"):
        export(Result(), tmp_path / "nowhere")
    assert safe_name("Doe^John / T1: post") == "Doe_John___T1__post" and safe_name("...") == "volume"


def test_the_diagnosis_line_says_indeterminate_and_the_caution_line_says_what_the_input_check_found():
    base = {"diagnosis": {"label": "meningioma", "probabilities": {"glioma": 0.3, "meningioma": 0.45,
                                                                    "pituitary": 0.05, "no_tumor": 0.2}},
            "lesion": {"volume_ml": 3.1}}
    assert describe(base) == "indeterminate (highest: meningioma, calibrated p = 0.45); lesion 3.1 mL"
    sure = {**base, "diagnosis": {**base["diagnosis"], "probabilities": {"meningioma": 0.8, "glioma": 0.2}}}
    assert describe(sure) == "meningioma (calibrated p = 0.80); lesion 3.1 mL"
    assert input_caution(base) == ""  # findings before 1.1 carry no input check
    check = {"checked": True, "brain_mri": True, "brain_coverage": 0.62, "contrast_enhanced": False,
             "enhancement_index": 1.01, "flags": ["partial_brain", "not_contrast_enhanced"]}
    line = input_caution({**base, "input_check": check})
    assert line.startswith("Check the input: the field of view holds only 62% of the brain; it does not look "
                           "contrast-enhanced") and line.endswith("The diagnosis is unreliable.")
    assert input_caution({**base, "input_check": {**check, "flags": []}}) == ""


def test_the_method_line_says_what_the_model_predicts_without_the_shown_methods_region():
    from helpers import counterfactual_case, glioma_case

    f = counterfactual_case()
    assert method_evidence(f, "gradcam") == (
        "Grad-CAM: mask 19.8 mL at percentile 95, Dice with the segmentation 0.71. Without its region the model "
        "predicts no tumour (p 0.71; glioma 0.22, was 0.93). Deletion AUC 0.08 (random 0.47, lower is better), "
        "insertion AUC 0.57 (random 0.66, higher is better).")
    assert "still predicts glioma (p 0.60, was 0.93). Deletion" in method_evidence(f, "gradcam++")
    assert "(p 0.89, was 0.93), for its region at percentile 90. Deletion AUC 0.51" in method_evidence(f, "scorecam")
    assert method_evidence(glioma_case(), "gradcam").endswith("Dice with the segmentation 0.71.")  # before 1.2
    assert method_evidence(f, "mincam") == "" and method_evidence({}, "gradcam") == ""
