"""Explain runs for a volume node of an MRML scene: the Slicer module's logic, Qt-free.

The input is written through the node's own storage node (its geometry exactly as Slicer has it), `brainxai
explain` runs in a background process (brainxai.app.process), and its folder is read back into the scene
(brainxai.mrml.scene). Each run works in its own temporary folder, removed when the run fails or is cancelled, and
for finished results when they are dropped (scene closed, module cleaned up); never while its child still runs.
Runs headless on slicer-core and inside Slicer alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import BrainXAIError
from ..options import Options
from .process import BackgroundExplain, WarmWorker


def python_executable() -> str:
    """The child's Python: Slicer's PythonSlicer launcher inside Slicer (as slicer.util does), else this one."""
    return shutil.which("PythonSlicer") or sys.executable


class ExplainSession:
    def __init__(self, scene, python: str | None = None):
        self.scene = scene
        self.python = python or python_executable()
        self.job: BackgroundExplain | None = None
        self.worker: WarmWorker | None = None  # started ahead of a run: it skips start-up and imports
        self.input_node = None  # the node the running job was started on
        self.out_dir: Path | None = None
        self.work_dir: Path | None = None  # the running (or last) job's folder
        self.work_dirs: list[Path] = []  # one per run whose folder still exists

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self, volume_node, options: Options | None = None, out_dir: str | Path | None = None,
              llm: str | None = None, allow_cloud: bool = False, llm_base_url: str | None = None) -> BackgroundExplain:
        """Write the volume and start the pipeline in a background process. Poll job.poll(); when `running` turns
        False, call finish(). llm: a report backend (brainxai.reporting.llm.PRESETS); its key comes from the environment."""
        if self.running:
            raise BrainXAIError("a BrainXAI run is in progress: wait for it or cancel it first")
        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise BrainXAIError("select a scalar volume (the contrast-enhanced T1) as input")
        if volume_node.GetClassName() != "vtkMRMLScalarVolumeNode":  # what the panel's selector offers
            raise BrainXAIError(f"'{volume_node.GetName()}' is a {volume_node.GetClassName()[7:]} (a label map, RGB "
                                "or diffusion volume): select the contrast-enhanced T1 scalar volume")
        if volume_node.GetImageData() is None:
            raise BrainXAIError(f"'{volume_node.GetName()}' holds no image: load the scan again")
        work = Path(tempfile.mkdtemp(prefix="BrainXAI-"))
        self.work_dirs.append(work)
        input_path = work / f"{safe_name(volume_node.GetName())}.nrrd"  # the child's messages name the user's volume
        from ..mrml.scene import new_storage_node

        storage = new_storage_node(volume_node)  # not added to the scene: the user's node is untouched
        storage.SetFileName(str(input_path))
        storage.SetUseCompression(0)
        if not storage.WriteData(volume_node):
            self.remove_work_dir(work)
            raise BrainXAIError(f"could not write the input volume to {input_path}: is the disk full?")
        self.work_dir = work
        self.out_dir = Path(out_dir) if out_dir else work / "results"
        self.input_node = volume_node
        worker, self.worker = self.worker, None  # one job per worker
        self.job = BackgroundExplain(input_path, self.out_dir, options or Options(methods=("gradcam++",)),
                                     python=self.python, llm=llm, allow_cloud=allow_cloud,
                                     llm_settings={"base_url": llm_base_url}).start(worker)
        return self.job

    def finish(self):
        """After the job has ended: its results as scene nodes (brainxai.mrml.scene.SceneResult). Raises BrainXAIError
        with the child's one-line message when it failed or was cancelled; its folder is then already gone."""
        from ..mrml import scene

        if self.job is None:
            raise BrainXAIError("no BrainXAI run to finish")
        if self.running:
            raise BrainXAIError("the BrainXAI run has not ended yet")
        try:
            self.job.wait()
            return scene.load_results(self.scene, self.out_dir, self.input_node)
        except BaseException:
            self.remove_work_dir(self.work_dir)  # a failed or cancelled run leaves nothing behind
            raise

    def discard(self) -> None:
        """Forget an ended job without reading it (cancelled, or its scene was closed): its folder goes."""
        if self.job is not None and not self.running:
            try:
                self.job.wait(5)  # collects the child; after a forced stop, removes what it left
            except (BrainXAIError, subprocess.TimeoutExpired):
                pass
            self.remove_work_dir(self.work_dir)
            self.job = None

    def cancel(self, wait: bool = False) -> None:
        if self.running:
            self.job.cancel(wait=wait)

    def run(self, volume_node, options: Options | None = None, process_events=None, **llm):
        """Blocking run for scripts; `process_events` (Slicer: slicer.app.processEvents) keeps a GUI alive."""
        self.start(volume_node, options, **llm)
        while self.running:
            if process_events is not None:
                process_events()
            time.sleep(0.1)
        return self.finish()

    def prewarm(self) -> None:
        """Start a worker that imports the torch stack and reads the weights now (~1 GB while it waits)."""
        if not self.running and (self.worker is None or not self.worker.alive):
            self.worker = WarmWorker(python=self.python)

    def close_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def remove_work_dir(self, work: Path | None) -> None:
        if work is None:
            return
        shutil.rmtree(work, ignore_errors=True)
        if work in self.work_dirs:
            self.work_dirs.remove(work)

    def remove_work_dirs(self) -> None:
        """The folders of dropped results. A running job's folder stays until its child has ended (discard)."""
        for work in list(self.work_dirs):
            if not (self.running and work == self.work_dir):
                self.remove_work_dir(work)


def safe_name(name: str | None) -> str:
    """A node name as a file name on every platform."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or "")).strip("._")
    return name[:80] or "volume"


def export(result, folder: str | Path) -> Path:
    """Copy a result's folder (as it now stands: re-thresholds included) into `folder`, never over anything."""
    name = safe_name(result.input_node.GetName() if result.input_node is not None else None)
    target = Path(folder) / f"BrainXAI-{name}"
    if not Path(folder).is_dir():
        raise BrainXAIError(f"{folder} is not a folder: choose an existing folder")
    if os.path.lexists(target):
        raise BrainXAIError(f"{target} exists: choose another folder (BrainXAI never overwrites)")
    shutil.copytree(result.out_dir, target)
    return target
