"""The Slicer panel's decisions, Qt-free: what Apply, Cancel, the poll, the method selector, the slider, the MNI
toggle, Export and a scene close do, and what the widgets show.

The widget (BrainXAI/BrainXAI.py) maps each Qt signal to one method here and `view()` back to its widgets; the
panel's settings live in a parameter node (`params`: Slicer's parameterNodeWrapper in the module, fields below), so
they survive module switches and are saved with the scene. The cloud opt-in is deliberately not among them: it is
asked for in every session and never saved. Runs headless on slicer-core's MRML (Testing/test_panel.py).

This module imports nothing beyond the standard library at load time: the panel must open before the user has
agreed to install BrainXAI's Python packages.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Protocol

from .. import layout
from ..errors import BrainXAIError
from ..options import Options
from ..explain import METHODS, TITLES

# brainxai.reporting.llm.PRESETS (importing it needs packages that are installed only after the user agrees)
LLM_BACKENDS = ("llama", "ollama", "vllm", "llamacpp", "grok", "mistral")
BUILTIN_WRITER = "builtin"
PARAMETERS = {  # the parameter node's fields and defaults (BrainXAIParameterNode in the module mirrors them)
    "inputVolume": None, "method": "gradcam++", "allMethods": False, "enhanceMaps": False, "threshold": 90.0,
    "llmBackend": BUILTIN_WRITER, "llmEndpoint": "",
}
NO_RESULT = "No result yet."


class Host(Protocol):
    """What the controller asks of the widget layer."""

    def update(self) -> None: ...  # state changed: show view() (and the parameter node's values)

    def error(self, text: str) -> None: ...  # a modal one-line error

    def status(self, text: str) -> None: ...  # a transient status-bar message

    def choose_folder(self, title: str) -> str | None: ...  # a folder picker; None when cancelled


@dataclass(frozen=True)
class View:
    """Everything the widgets show, derived from the controller's state."""

    apply_text: str
    apply_enabled: bool
    apply_tooltip: str
    settings_enabled: bool  # input, method, all-methods, report writer: locked while a run or an install goes on
    llm_options_enabled: bool  # endpoint and cloud opt-in: only for an LLM writer
    progress_visible: bool
    progress_value: int
    progress_text: str
    polling: bool  # the widget's timer calls poll() while this is True
    result_actions_enabled: bool  # jump, export, threshold slider
    mni_enabled: bool
    mni_checked: bool
    diagnosis: str
    input_caution: str  # what the input check found (empty: nothing, or no result); shown above the report
    method_evidence: str  # how far to trust the shown method's map (empty: no result, or the method was not run)
    report_html: str
    table: object | None  # vtkMRMLTableNode of the result's regions


def describe(findings: dict) -> str:
    """The diagnosis line of the panel."""
    d = findings.get("diagnosis")
    if not d:
        return "No diagnosis: " + "; ".join(findings.get("warnings", [])[:1] or ["the input was not recognised"])
    from ..reporting.report import LOW_CONFIDENCE  # a result exists: the packages are installed

    lesion = findings.get("lesion", {}).get("volume_ml")
    p = d["probabilities"][d["label"]]
    call = (f"{d['label']} (calibrated p = {p:.2f})" if p >= LOW_CONFIDENCE else
            f"indeterminate (highest: {d['label']}, calibrated p = {p:.2f})")
    return call + (f"; lesion {lesion} mL" if lesion is not None else "")


CAUTIONS = {  # brainxai.guard's flags, as the panel says them
    "not_brain_mri": "it may not be a brain MRI",
    "partial_brain": "the field of view holds only {brain_coverage:.0%} of the brain",
    "not_contrast_enhanced": "it does not look contrast-enhanced (the model expects a contrast-enhanced T1)",
}


def input_caution(findings: dict) -> str:
    """One line on what the input check found, or "" when it found nothing (or did not run)."""
    check = findings.get("input_check") or {}
    said = [CAUTIONS[f].format(**check) for f in check.get("flags", []) if f in CAUTIONS]
    return ("Check the input: " + "; ".join(said) + ". The diagnosis is unreliable.") if said else ""


def method_evidence(findings: dict, method: str | None) -> str:
    """One line beside the shown method: its mask, its agreement with the segmentation, what the model says with
    the mask's region removed (the counterfactual) and its deletion / insertion scores beside random maps', so a map
    the call does not rest on is seen as such."""
    entry = next((e for e in findings.get("explanations", []) if e["method"] == method), None)
    if entry is None:
        return ""
    from ..reporting.report import CLASS_NAMES

    dice = entry["dice_vs_segmentation"]
    cut = (f"where its probability is at least {entry['threshold_level']:g}" if "threshold_level" in entry else
           f"at percentile {entry['threshold_percentile']:g}")
    line = (f"{TITLES.get(method, method)}: mask {entry['mask_volume_ml']:.1f} mL {cut}"
            + ("" if dice is None else f", Dice with the segmentation {dice:.2f}"))
    me = entry.get("minimal_evidence")
    if me:
        label = findings["diagnosis"]["label"]
        line += (f". From its region alone ({me['area_percent_of_brain']:.1f}% of the brain) the model "
                 + (f"keeps {CLASS_NAMES[label]} (p {me['probabilities'][label]:.2f})" if me["label"] == label else
                    f"predicts {CLASS_NAMES[me['label']]} (p {me['probabilities'][me['label']]:.2f}), not "
                    f"{CLASS_NAMES[label]}"))
    cf = entry.get("counterfactual")
    if cf:
        label, was = findings["diagnosis"]["label"], findings["diagnosis"]["probabilities"]
        now = cf["probabilities"]
        line += (f". Without its region the model still predicts {CLASS_NAMES[label]} (p {now[label]:.2f}, was "
                 f"{was[label]:.2f})" if cf["label"] == label else
                 f". Without its region the model predicts {CLASS_NAMES[cf['label']]} (p {now[cf['label']]:.2f}; "
                 f"{CLASS_NAMES[label]} {now[label]:.2f}, was {was[label]:.2f})")
        if cf["threshold_percentile"] != entry["threshold_percentile"]:
            line += f", for its region at percentile {cf['threshold_percentile']:g}"
    fa = entry.get("faithfulness")
    if fa:
        line += (f". Deletion AUC {fa['deletion_auc']:.2f} (random {fa['random_deletion_auc']:.2f}, lower is better), "
                 f"insertion AUC {fa['insertion_auc']:.2f} (random {fa['random_insertion_auc']:.2f}, higher is better)")
    return line + "."


class PanelController:
    """One per module widget. `session` is a brainxai.app.session.ExplainSession on the scene; `ensure_dependencies`
    asks the user and installs (True when everything is there); `dependencies_installed` only checks."""

    def __init__(self, session, params, host: Host, ensure_dependencies, dependencies_installed,
                 keep_worker_warm: bool = False):
        self.session = session
        self.params = params
        self.host = host
        self.ensure_dependencies = ensure_dependencies
        self.dependencies_installed = dependencies_installed
        self.keep_worker_warm = keep_worker_warm
        self.allow_cloud = False  # asked for in every session, never stored
        self.result = None  # brainxai.mrml.scene.SceneResult shown in the panel
        self.installing = False
        self.progress: tuple[str, float] = ("", 0.0)
        self.run_method: str | None = None  # the method shown when the running job ends
        self.discard_running = False  # the running job's scene has gone: drop its output when it ends
        self._handled = None  # the last job whose end has been dealt with
        self._report: tuple = (None, "")  # ((path, mtime), html) of the report last shown

    # ---------------------------------------------------------------------------------------------- state

    @property
    def running(self) -> bool:
        return self.session.running

    @property
    def cancelling(self) -> bool:
        return self.running and self.session.job.cancelled

    def param(self, name: str):
        """A setting from the parameter node, or its default while there is none (between scene close and
        the module being shown again)."""
        return PARAMETERS[name] if self.params is None else getattr(self.params, name)

    def methods_to_run(self) -> tuple[str, ...]:
        return tuple(METHODS) if self.param("allMethods") else (self.param("method"),)

    def view(self) -> View:
        running, result = self.running, self.result
        busy = running or self.installing
        if running:
            tooltip = "Stop the run; nothing of it is kept" if not self.cancelling else "Cancelling..."
        elif self.installing:
            tooltip = "Installing BrainXAI's Python packages..."
        elif self.param("inputVolume") is None:
            tooltip = "Select the contrast-enhanced T1 volume first"
        else:
            tooltip = "Classify, explain and localise the selected volume in the background"
        stage, fraction = self.progress
        report = self._report_html() if result is not None else ""
        return View(
            apply_text="Cancel" if running else "Apply",
            apply_enabled=(running and not self.cancelling) or (not busy and self.param("inputVolume") is not None),
            apply_tooltip=tooltip,
            settings_enabled=not busy,
            llm_options_enabled=not busy and (self.param("llmBackend") or BUILTIN_WRITER) != BUILTIN_WRITER,
            progress_visible=running,
            progress_value=int(round(100 * fraction)),
            progress_text=("cancelling" if self.cancelling else stage or "starting") + " %p%",
            polling=running,
            result_actions_enabled=result is not None and not busy,
            mni_enabled=result is not None and result.to_mni is not None and not busy,
            mni_checked=result is not None and result.space == "mni",
            diagnosis=describe(result.findings) if result is not None else NO_RESULT,
            input_caution=input_caution(result.findings) if result is not None else "",
            method_evidence=method_evidence(result.findings, self.param("method")) if result is not None else "",
            report_html=report,
            table=result.table if result is not None else None,
        )

    def _report_html(self) -> str:
        """The verified LLM report when there is one (or the built-in one under its banner), else the built-in
        report; a re-threshold removes an LLM report written for the old threshold."""
        for name in (layout.LLM_REPORT_STEM + ".html", layout.REPORT_HTML):
            path = self.result.out_dir / name
            if path.is_file():
                key = (path, path.stat().st_mtime_ns)  # view() runs at every poll tick: read a report once
                if self._report[0] != key:
                    self._report = (key, path.read_text(encoding="utf-8"))
                return self._report[1]
        return f"<p>No report in {html.escape(str(self.result.out_dir))}.</p>"

    # ---------------------------------------------------------------------------------------------- run

    def apply(self) -> None:
        """Apply starts a run; while one runs the same button cancels it."""
        if self.running:
            self.cancel()
            return
        if self.installing:  # a second click while pip runs
            return
        node = self.param("inputVolume")
        if node is None:
            self.host.error("Select the contrast-enhanced T1 volume to analyse.")
            return
        self.installing = True
        self.host.update()
        try:
            ready = self.ensure_dependencies()
        finally:
            self.installing = False
        if not ready:
            self.host.update()
            return
        if self.result is not None and self.result.space != "native":
            self.set_space(False)  # the new run must see the input in its own space, not under the MNI transform
        backend = self.param("llmBackend") or BUILTIN_WRITER
        try:
            self.session.start(node, Options(methods=tuple(self.methods_to_run()),
                                             threshold_percentile=float(self.param("threshold")),
                                             enhance=bool(self.param("enhanceMaps"))),
                               llm=None if backend == BUILTIN_WRITER else backend, allow_cloud=self.allow_cloud,
                               llm_base_url=(self.param("llmEndpoint") or "").strip() or None)
        except (BrainXAIError, OSError) as exc:
            self.host.error(str(exc))
            self.host.update()
            return
        self.run_method = self.param("method")
        self.discard_running = False
        self.progress = ("starting", 0.0)
        self.host.update()

    def cancel(self) -> None:
        """Returns at once; poll() sees the child go and reports the cancel."""
        self.session.cancel(wait=False)
        self.host.update()

    def poll(self) -> bool:
        """Called by the widget's timer; True while the run goes on."""
        job = self.session.job
        if job is None or job is self._handled:
            return False
        p = job.poll()
        self.progress = (p.stage, p.fraction)
        if self.running:
            self.host.update()
            return True
        self._ended()
        return False

    def _ended(self) -> None:
        job = self._handled = self.session.job  # a late timer tick must not read the same run twice
        if self.discard_running or job.cancelled:  # even if it finished just before the cancel reached it
            self.session.discard()
            if not self.discard_running:
                self.host.status("BrainXAI: cancelled; nothing was kept")
            self.discard_running = False
        else:
            try:
                result = self.session.finish()
            except BrainXAIError as exc:
                self.host.error(str(exc))
            else:
                self._show(result)
        self.progress = ("", 0.0)
        if self.keep_worker_warm:
            self.prewarm()  # ready for the next run (started after this one, so it never slowed it)
        self.host.update()

    def _show(self, result) -> None:
        from ..mrml import scene

        self.result = result
        # The method the run was started for: the selector is locked during a run, and a method changed by a
        # script meanwhile may not have been computed.
        method = self.run_method if self.run_method in result.heatmaps else next(iter(result.heatmaps))
        if self.params is not None:
            self.params.method = method
        scene.show_in_slice_views(self.session.scene, result, method)

    # ---------------------------------------------------------------------------------------------- result

    def method_changed(self) -> None:
        from ..mrml import scene

        method = self.param("method")
        if self.result is None or self.running:
            return
        if method not in self.result.heatmaps:
            self.host.status(f"BrainXAI: {TITLES.get(method, method)} was not computed for this result; press Apply "
                             "(or tick 'Compute all methods')")
            return
        scene.show_in_slice_views(self.session.scene, self.result, method)
        if self.params is not None:
            self.params.threshold = self._percentile(method)  # the slider shows this method's mask percentile
        self.host.update()

    def _percentile(self, method: str) -> float:
        entry = next(e for e in self.result.findings["explanations"] if e["method"] == method)
        return float(entry["threshold_percentile"])

    def threshold_changed(self, value: float) -> None:
        """The slider was released: re-threshold the shown method's heatmap (no re-run)."""
        from ..mrml import scene

        if self.params is not None:
            self.params.threshold = float(value)
        method = self.param("method")
        if self.result is None or self.running or method not in self.result.masks:
            return
        if self._percentile(method) == float(value):
            return
        try:
            scene.rethreshold(self.result, method, float(value))
        except BrainXAIError as exc:
            self.host.error(str(exc))
        self.host.update()  # the report states the mask's percentile, volume and overlap

    def set_space(self, mni: bool) -> None:
        from ..mrml import scene

        if self.result is None or self.result.to_mni is None or self.running:
            return
        scene.set_space(self.result, "mni" if mni else "native")
        self.host.update()

    def jump(self) -> None:
        from ..mrml.slice_views import jump_to_lesion

        if self.result is not None and jump_to_lesion(self.session.scene, self.result) is None:
            self.host.status("BrainXAI: no lesion or mask voxels to jump to")

    def export(self) -> None:
        from .session import export

        if self.result is None:
            return
        folder = self.host.choose_folder("Export BrainXAI results to")
        if not folder:
            return
        try:
            target = export(self.result, folder)
        except (BrainXAIError, OSError) as exc:
            self.host.error(str(exc))
            return
        self.host.status(f"BrainXAI results exported to {target}")

    # ---------------------------------------------------------------------------------------------- lifecycle

    def scene_closing(self) -> None:
        """File > Close Scene: the result's nodes go, so does everything shown of the previous patient; a run in
        progress is cancelled and its output dropped when its child has ended."""
        if self.running:
            self.discard_running = True
            self.session.cancel(wait=False)
        self.result = None
        self.run_method = None
        self.session.remove_work_dirs()
        self.host.update()

    def set_params(self, params) -> None:
        """The scene's parameter node (None while there is none: after a scene close, until the module shows)."""
        self.params = params
        self.host.update()

    def enter(self) -> None:
        if self.keep_worker_warm:
            self.prewarm()

    def set_keep_worker_warm(self, on: bool) -> None:
        self.keep_worker_warm = bool(on)
        if self.keep_worker_warm:
            self.prewarm()
        else:
            self.session.close_worker()

    def prewarm(self) -> None:
        """A warm worker only with the dependencies installed and no run going on."""
        if not self.running and self.dependencies_installed():
            self.session.prewarm()

    def cleanup(self) -> None:
        """Module unloaded or Slicer closing: the worker, the child and every work folder go; each step runs
        even if one before it failed."""
        try:
            self.session.close_worker()
        finally:
            try:
                if self.running:
                    self.session.cancel(wait=True)
                    self.session.discard()
            finally:
                self.result = None
                self.session.remove_work_dirs()
