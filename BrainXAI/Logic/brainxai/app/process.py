"""`brainxai explain` in a background process, so Slicer's GUI never freezes.

The child is any Python with brainxai importable (in Slicer: PythonSlicer). It reports progress as JSON lines
on stdout; a reader thread collects them and the caller polls from a timer. In Slicer the child is CTK's launcher
(PythonSlicer), which starts the real Python with the same pipes: the job has ended when the pipes close, not when
the launcher exits. Cancel stops the child's whole process group: on POSIX SIGTERM first (the child removes its
temporary folder), SIGKILL after a grace period; on Windows the tree is ended at once (a GUI process has no console
to send Ctrl+Break through) and the temporary folder it leaves is removed here. No Qt here.
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

from ..errors import BrainXAIError
from ..options import Options, to_argv

PROGRESS_PREFIX = "BRAINXAI-PROGRESS "
READY_LINE = "BRAINXAI-READY"  # a warm worker's first line: imports done, weights read, waiting for its job


def progress_line(stage: str, fraction: float) -> str:
    return PROGRESS_PREFIX + json.dumps({"stage": stage, "fraction": round(float(fraction), 4)})


@dataclass
class ProgressReport:
    """One progress line of a background run: the stage and the overall fraction the pipeline's callback gave."""

    stage: str
    fraction: float


def child_env(package_root: str | Path | None = None) -> dict[str, str]:
    """The environment for the child: ours, with the folder holding this `brainxai` first on PYTHONPATH.

    Inside Slicer the package is importable only because the module appended BrainXAI/Logic to the GUI
    process's sys.path; a PythonSlicer child knows nothing of that and must be told, or it would fail to import
    brainxai. (PythonSlicer's launcher puts Slicer's own paths before PYTHONPATH; none of them holds a brainxai.)"""
    # this file is brainxai/app/process.py: the folder that holds the package is three levels up
    root = Path(package_root) if package_root else Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"  # whatever the locale, the child writes what the parent decodes
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


# Windows process-creation flags (winbase.h), spelled out: subprocess defines them only on Windows.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


def _platform_kwargs() -> dict:
    """Own process group (so cancel reaches the launcher's children too) and, on Windows, no console window: the
    same hiding as Slicer's slicer.util.launchConsoleProcess (STARTUPINFO with wShowWindow = SW_HIDE)."""
    if os.name == "posix":
        return {"start_new_session": True}
    info = subprocess.STARTUPINFO()  # type: ignore[attr-defined]
    info.dwFlags |= STARTF_USESHOWWINDOW
    info.wShowWindow = SW_HIDE
    return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW, "startupinfo": info}


def _spawn(cmd: list[str], env: dict, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", env=env,
                            **_platform_kwargs())


class _Child:
    """A child process whose stdout lines (progress, ready) and stderr lines are collected by reader threads."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.events: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self.ready = threading.Event()
        self.threads = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.threads:
            t.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                d = json.loads(line[len(PROGRESS_PREFIX):])
                self.events.put(ProgressReport(d["stage"], d["fraction"]))
            elif line.strip() == READY_LINE:
                self.ready.set()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            if line.strip():
                self.stderr.append(line.rstrip())

    @property
    def running(self) -> bool:
        """Until the process has exited and every process holding its pipes (the launcher's Python) has gone."""
        return self.proc.poll() is None or any(t.is_alive() for t in self.threads)

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        for t in self.threads:  # the launcher may exit before the Python it started: EOF on the pipes is the end
            t.join(timeout)
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return code


class WarmWorker:
    """A `brainxai worker` child that has imported the torch stack and read the default weights and now waits for
    one job on stdin: a run handed to it skips the interpreter start-up and ~5 s of imports. It serves one job
    and exits, so nothing of one patient's run stays in memory for the next; start another for the next run.
    An idle worker holds about 1 GB of memory; close() ends it."""

    def __init__(self, python: str | None = None, env: dict | None = None):
        self.env = env if env is not None else child_env()
        self.child = _Child(_spawn([python or sys.executable, "-m", "brainxai", "worker"], self.env, stdin=True))

    @property
    def alive(self) -> bool:
        return self.child.proc.poll() is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.child.ready.wait(timeout)

    def take(self, argv: list[str], env: dict[str, str]) -> _Child:
        """Hand the worker its one job (a `brainxai` command line and environment overrides)."""
        self.child.proc.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
        self.child.proc.stdin.close()
        return self.child

    def close(self) -> None:
        """End an idle worker (nothing of a patient is in it: it serves one job and exits)."""
        if self.alive:
            _stop_group(self.child.proc, force=True)
            self.child.proc.wait()


def _stop_group(proc: subprocess.Popen, force: bool) -> None:
    """Stop the child's process group: the launcher and the Python it started. POSIX: SIGTERM (the child unwinds and
    removes its temporary output) or, with force, SIGKILL. Windows has neither signal for another process group
    without a shared console: taskkill ends the tree."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL if force else signal.SIGTERM)  # type: ignore[attr-defined]
        except ProcessLookupError:  # it ended in the meantime
            pass
    else:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True,
                       creationflags=CREATE_NO_WINDOW)


class BackgroundExplain:
    def __init__(self, input_path: str | Path | None, out_dir: str | Path, options: Options | None = None,
                 python: str | None = None, env: dict | None = None, llm: str | None = None,
                 allow_cloud: bool = False, llm_settings: dict | None = None):
        self.out_dir = Path(out_dir)
        cmd = [python or sys.executable, "-m", "brainxai", "explain", "--out", str(self.out_dir), "--progress", "json"]
        cmd += [str(input_path)] if input_path is not None else ["--demo"]
        cmd += to_argv(options or Options())
        if llm and llm != "builtin":  # the child also writes report_llm.md/.html/.json, verified
            cmd += ["--llm", llm] + (["--allow-cloud"] if allow_cloud else [])
        self.command = cmd
        self.env = env if env is not None else child_env()
        for key, value in (llm_settings or {}).items():  # e.g. base_url, model: BRAINXAI_LLM_* for the child only
            if value:
                self.env["BRAINXAI_LLM_" + key.upper()] = str(value)
        if not allow_cloud:  # the caller's "no" wins over a config file or an inherited variable
            self.env["BRAINXAI_LLM_ALLOW_CLOUD"] = "0"
        self._child: _Child | None = None
        self.cancelled = False  # cancel() was asked: a failure that follows is the cancel, not an error
        self._forced = False  # ended without a chance to clean up after itself
        self._leftovers: set[Path] = set()  # temporary siblings of out_dir that were there before the run
        self.last = ProgressReport("starting", 0.0)
        self.stages: list[str] = []  # every stage the child reported, in order (fast ones fall between two polls)

    def start(self, worker: WarmWorker | None = None) -> "BackgroundExplain":
        """Run in a new child, or in `worker` if it is alive (it must run the same Python with the same package)."""
        self._child = None
        self._leftovers = set(self._temporaries())
        if worker is not None and worker.alive:
            overrides = {k: v for k, v in self.env.items() if k.startswith("BRAINXAI_")}
            try:
                self._child = worker.take(self.command[3:], overrides)  # the arguments after "python -m brainxai"
            except OSError:  # it ended between the check and the hand-over: a fresh child does the run
                worker.close()
        if self._child is None:
            self._child = _Child(_spawn(self.command, self.env))
        return self

    @property
    def _proc(self) -> subprocess.Popen | None:
        return None if self._child is None else self._child.proc

    def poll(self) -> ProgressReport:
        """The latest progress (non-blocking)."""
        while self._child is not None:
            try:
                self.last = self._child.events.get_nowait()
            except queue.Empty:
                return self.last
            if not self.stages or self.stages[-1] != self.last.stage:
                self.stages.append(self.last.stage)
        return self.last

    @property
    def running(self) -> bool:
        """False once the child and every process holding its output pipes have ended."""
        return self._child is not None and self._child.running

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def error(self) -> str:
        """The child's one-line error (its last stderr line), or ''."""
        lines = self._child.stderr if self._child is not None else []
        return next((line for line in reversed(lines) if line.startswith("brainxai:")), lines[-1] if lines else "")

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child ends; raise BrainXAIError with its message if it failed."""
        code = self._child.wait(timeout)
        self.poll()
        if self._forced or code < 0:  # killed: it had no chance to remove its staging folder
            self._remove_temporaries()
        if code < 0 and not self.cancelled:  # POSIX: ended by a signal it did not handle (the OOM killer: SIGKILL)
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise BrainXAIError(f"the background BrainXAI process was killed ({name}"
                                f"{', perhaps out of memory' if name == 'SIGKILL' else ''}) before it finished: "
                                "nothing was written or loaded; run it again")
        if code != 0:
            raise BrainXAIError(self.error() or f"brainxai explain ended with code {code}")
        return code

    def cancel(self, grace: float = 10.0, wait: bool = True) -> None:
        """Stop the child and everything it started; on POSIX it removes its temporary folder on SIGTERM and gets
        SIGKILL if it has not stopped after `grace` seconds. wait=False returns at once (a GUI thread must not
        block): the escalation then happens on a watchdog thread, and `running` turns False when the child is gone."""
        if not self.running:
            return
        self.cancelled = True
        self._forced = os.name != "posix"
        if wait:
            self._stop(grace)
        else:  # taskkill takes a moment on Windows: not on the GUI thread either
            threading.Thread(target=self._stop, args=(grace,), daemon=True).start()

    def _stop(self, grace: float) -> None:
        _stop_group(self._proc, force=self._forced)
        try:
            self._child.wait(grace)
        except subprocess.TimeoutExpired:
            self._forced = True
            _stop_group(self._proc, force=True)
            self._child.wait()

    def _temporaries(self) -> list[Path]:
        """The staging folders `brainxai explain` writes into before moving them to out_dir (output.leftovers); not
        ".NAME.old-PID", which is the user's previous output while --overwrite swaps folders."""
        from ..output import leftovers  # not at the top: the module file imports this one before any install

        return leftovers(self.out_dir.resolve())[0]

    def _remove_temporaries(self) -> None:
        import shutil

        for path in self._temporaries():
            if path not in self._leftovers:  # only what this run left; never something that was there before
                shutil.rmtree(path, ignore_errors=True)
