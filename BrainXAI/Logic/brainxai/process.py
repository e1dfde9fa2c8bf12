"""`brainxai explain` in a background process, so Slicer's GUI never freezes.

The child is any Python with brainxai importable (in Slicer: PythonSlicer). It reports progress as JSON lines
on stdout; a reader thread collects them and the caller polls from a timer. Cancel terminates the child's whole
process group (SIGTERM lets it remove its temporary folder, SIGKILL follows if it does not stop). No Qt here.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import BrainXAIError

PROGRESS_PREFIX = "BRAINXAI-PROGRESS "


def progress_line(stage: str, fraction: float) -> str:
    return PROGRESS_PREFIX + json.dumps({"stage": stage, "fraction": round(float(fraction), 4)})


@dataclass
class Progress:
    stage: str
    fraction: float


def child_env(package_root: str | Path | None = None) -> dict[str, str]:
    """The environment for the child: ours, with the folder holding this `brainxai` first on PYTHONPATH.

    Inside Slicer the package is importable only because the module appended BrainXAI/Logic to the GUI
    process's sys.path; a PythonSlicer child knows nothing of that and must be told, or it would fail to
    import brainxai (or import another copy)."""
    root = Path(package_root) if package_root else Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"  # whatever the locale, the child writes what the parent decodes
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class BackgroundExplain:
    def __init__(self, input_path: str | Path | None, out_dir: str | Path, methods: tuple[str, ...] = (),
                 threshold: float | None = None, max_cam_slices: int | None = None, python: str | None = None,
                 model: str | Path | None = None, env: dict | None = None, llm: str | None = None,
                 allow_cloud: bool = False, llm_settings: dict | None = None):
        self.out_dir = Path(out_dir)
        cmd = [python or sys.executable, "-m", "brainxai", "explain", "--out", str(self.out_dir), "--progress", "json"]
        cmd += [str(input_path)] if input_path is not None else ["--demo"]
        if methods:
            cmd += ["--methods", ",".join(methods)]
        if threshold is not None:
            cmd += ["--threshold", str(threshold)]
        if max_cam_slices is not None:
            cmd += ["--max-cam-slices", str(max_cam_slices)]
        if model is not None:
            cmd += ["--model", str(model)]
        if llm and llm != "builtin":  # the child also writes report_llm.md/.html/.json, verified
            cmd += ["--llm", llm] + (["--allow-cloud"] if allow_cloud else [])
        self.command = cmd
        self.env = env if env is not None else child_env()
        for key, value in (llm_settings or {}).items():  # e.g. base_url, model: BRAINXAI_LLM_* for the child only
            if value:
                self.env["BRAINXAI_LLM_" + key.upper()] = str(value)
        if not allow_cloud:  # the caller's "no" wins over a config file or an inherited variable
            self.env["BRAINXAI_LLM_ALLOW_CLOUD"] = "0"
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self.last = Progress("starting", 0.0)
        self.stages: list[str] = []  # every stage the child reported, in order (fast ones fall between two polls)

    def start(self) -> "BackgroundExplain":
        kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      encoding="utf-8", errors="replace", env=self.env, **kwargs)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                d = json.loads(line[len(PROGRESS_PREFIX):])
                self._events.put(Progress(d["stage"], d["fraction"]))

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            if line.strip():
                self._stderr.append(line.rstrip())

    def poll(self) -> Progress:
        """The latest progress (non-blocking)."""
        while True:
            try:
                self.last = self._events.get_nowait()
            except queue.Empty:
                return self.last
            if not self.stages or self.stages[-1] != self.last.stage:
                self.stages.append(self.last.stage)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def error(self) -> str:
        """The child's one-line error (its last stderr line), or ''."""
        return next((line for line in reversed(self._stderr) if line.startswith("brainxai:")),
                    self._stderr[-1] if self._stderr else "")

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child ends; raise BrainXAIError with its message if it failed."""
        code = self._proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        self.poll()
        if code != 0:
            raise BrainXAIError(self.error() or f"brainxai explain ended with code {code}")
        return code

    def cancel(self, grace: float = 10.0, wait: bool = True) -> None:
        """Stop the child and everything it started; it removes its temporary folder on SIGTERM, and gets
        SIGKILL if it has not stopped after `grace` seconds. wait=False returns at once (a GUI thread must not
        block): the escalation then happens on a watchdog thread, and `running` turns False when the child is gone."""
        if not self.running:
            return
        if os.name == "posix":
            os.killpg(self._proc.pid, signal.SIGTERM)
        else:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._proc.pid)], capture_output=True)
        if wait:
            self._escalate(grace)
        else:
            threading.Thread(target=self._escalate, args=(grace,), daemon=True).start()

    def _escalate(self, grace: float) -> None:
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended in the meantime
                    pass
            self._proc.wait()
