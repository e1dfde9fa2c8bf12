"""The background run the Slicer module uses: a real child process, progress lines, cancel of the process tree."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import brainxai
from brainxai.errors import BrainXAIError
from brainxai.app.process import BackgroundExplain, WarmWorker, child_env
from brainxai.options import Options


def _worker(warm: bool):
    """A ready warm worker (what the Slicer module keeps at hand), or None for a fresh child per run."""
    if not warm:
        return None
    worker = WarmWorker()
    assert worker.wait_ready(300), worker.child.stderr[-3:]
    return worker


@pytest.mark.parametrize("warm", [False, True], ids=["fresh child", "warm worker"])
def test_background_run_reports_progress_and_writes_the_folder(tmp_path, warm):
    worker = _worker(warm)
    job = BackgroundExplain(None, tmp_path / "out", Options(methods=("gradcam++",), max_cam_slices=2)).start(worker)
    seen = []
    while job.running:
        p = job.poll()
        if not seen or seen[-1] != (p.stage, p.fraction):
            seen.append((p.stage, p.fraction))
        time.sleep(0.05)
    assert job.wait() == 0
    assert job.stages == ["preprocess", "register", "load_model", "model", "explain", "threshold", "faithfulness", "atlas", "report"], \
        job.stages
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and job.last.fraction == pytest.approx(1.0)
    assert (tmp_path / "out" / "findings.json").is_file()
    if worker is not None:
        assert not worker.alive  # one job, then it ends: nothing of this run stays for the next


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_a_warm_worker_killed_mid_run_is_one_line_and_leaves_nothing(tmp_path):
    """The OOM killer ends the worker during a run: one line that says so, no output folder, no staging left."""
    worker = _worker(True)
    out = tmp_path / "out"
    job = BackgroundExplain(None, out, Options(methods=("gradcam++",))).start(worker)
    deadline = time.time() + 120
    while job.poll().stage not in ("register", "load_model", "model") and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(worker.child.proc.pid, signal.SIGKILL)
    with pytest.raises(BrainXAIError, match=r"killed \(SIGKILL, perhaps out of memory\).*run it again"):
        job.wait(60)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    job = BackgroundExplain(None, out, Options(methods=("gradcam++",), max_cam_slices=2)).start()  # the next run
    assert job.wait(300) == 0 and (out / "findings.json").is_file()


def test_idle_warm_worker_ends_when_closed_or_left(tmp_path):
    worker = _worker(True)
    worker.child.proc.stdin.close()  # the parent went away without a job
    assert worker.child.proc.wait(30) == 0 and not worker.alive
    worker = _worker(True)
    worker.close()
    assert not worker.alive
    # A dead worker is not handed a job: the run falls back to a fresh child.
    job = BackgroundExplain(tmp_path / "missing.nii.gz", tmp_path / "out").start(worker)
    with pytest.raises(BrainXAIError, match="missing.nii.gz"):
        job.wait(120)


@pytest.mark.parametrize("warm", [False, True], ids=["fresh child", "warm worker"])
def test_cancel_kills_the_child_and_leaves_nothing(brats_path, tmp_path, warm):
    worker = _worker(warm)
    job = BackgroundExplain(brats_path, tmp_path / "out", Options(methods=("scorecam",))).start(worker)
    deadline = time.time() + 120
    while job.running and job.poll().stage not in ("model", "explain") and time.time() < deadline:
        time.sleep(0.1)
    assert job.running, job.error()
    t0 = time.time()
    job.cancel(wait=False)  # what the panel does: the GUI thread returns at once
    assert time.time() - t0 < 0.5
    while job.running and time.time() - t0 < 15:
        time.sleep(0.05)
    assert not job.running, "the child outlived SIGTERM + grace"
    with pytest.raises(BrainXAIError, match="cancelled"):
        job.wait()
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary sibling


def test_bad_input_comes_back_as_one_line(tmp_path):
    job = BackgroundExplain(tmp_path / "missing.nii.gz", tmp_path / "out").start()
    with pytest.raises(BrainXAIError, match="missing.nii.gz") as info:
        job.wait(120)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_child_imports_the_package_the_parent_points_it_at(tmp_path):
    """Inside Slicer brainxai is importable only through the module's sys.path entry: the child gets that folder
    first on PYTHONPATH, so it imports this very package (here a linked copy wins over the installed one)."""
    root = tmp_path / "Logic"
    root.mkdir()
    (root / "brainxai").symlink_to(Path(brainxai.__file__).parent, target_is_directory=True)
    out = subprocess.run([sys.executable, "-c", "import brainxai; print(brainxai.__file__)"], env=child_env(root),
                         capture_output=True, text=True, encoding="utf-8", check=True, cwd=tmp_path.parent)
    assert out.stdout.strip() == str(root / "brainxai" / "__init__.py")
    assert BackgroundExplain(None, tmp_path / "o").env["PYTHONPATH"].split(os.pathsep)[0] == str(
        Path(brainxai.__file__).resolve().parent.parent)


@pytest.mark.parametrize("warm", [False, True], ids=["fresh child", "warm worker"])
def test_background_run_writes_the_verified_llm_report(tmp_path, warm):
    """The Slicer panel's LLM settings travel to the child as --llm and BRAINXAI_LLM_* variables (never a key);
    a warm worker, started before they were known, gets them with its job."""
    from llm_server import LLMServer

    worker = _worker(warm)
    with LLMServer() as server:
        job = BackgroundExplain(None, tmp_path / "out", Options(methods=("gradcam++",), max_cam_slices=2), llm="vllm",
                                llm_settings={"base_url": server.url + "/v1", "model": "correct"}).start(worker)
        assert job.wait(600) == 0
        assert server.requests and server.requests[-1]["path"] == "/v1/chat/completions"
    record = json.loads((tmp_path / "out" / "report_llm.json").read_text(encoding="utf-8"))
    assert record["source"] == "llm" and record["attempts"][0]["verification"]["passed"]
    assert "<html>" in (tmp_path / "out" / "report_llm.html").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "report.html").is_file()  # the built-in report stays beside it


def _launcher(tmp_path, waits: bool) -> str:
    """A stand-in for CTK's app launcher (PythonSlicer): it starts the real Python with the same pipes. CTK's waits
    for it and dies at once on SIGTERM (no handler) while the Python unwinds; waits=False exits at once."""
    script = tmp_path / "PythonSlicer"
    tail = 'wait $!\nexit $?\n' if waits else "exit 0\n"
    script.write_text(f'#!/bin/sh\n"{sys.executable}" "$@" &\n{tail}', encoding="utf-8")
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(os.name != "posix", reason="the stand-in launcher is a POSIX shell script")
def test_a_run_ends_when_its_pipes_close_not_when_the_launcher_exits(tmp_path):
    job = BackgroundExplain(None, tmp_path / "out", Options(methods=("gradcam++",), max_cam_slices=2),
                            python=_launcher(tmp_path, waits=False)).start()
    time.sleep(1.0)
    assert job._proc.poll() == 0  # the launcher is gone ...
    assert job.running  # ... the run is not
    assert job.wait(300) == 0 and not job.running
    assert (tmp_path / "out" / "findings.json").is_file()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in launcher is a POSIX shell script")
def test_cancel_reaches_the_python_behind_the_launcher(brats_path, tmp_path):
    job = BackgroundExplain(brats_path, tmp_path / "out", Options(methods=("gradcam++",)),
                            python=_launcher(tmp_path, waits=True)).start()
    deadline = time.time() + 120
    while job.poll().stage not in ("register", "load_model", "model") and time.time() < deadline:
        time.sleep(0.05)
    assert job.running
    job.cancel(wait=False)
    while job._proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    launcher_gone = time.time()
    while job.running and time.time() < deadline:
        time.sleep(0.01)
    assert not job.running and job.cancelled and job._proc.returncode != 0
    assert time.time() - launcher_gone < 15  # the Python behind it got the signal too
    with pytest.raises(BrainXAIError):
        job.wait(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PythonSlicer"]  # no output, no temporary sibling


def test_windows_children_are_hidden_and_in_their_own_group(monkeypatch):
    from brainxai.app import process

    class STARTUPINFO:  # subprocess.STARTUPINFO exists only on Windows
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1

    monkeypatch.setattr(subprocess, "STARTUPINFO", STARTUPINFO, raising=False)
    monkeypatch.setattr(os, "name", "nt")
    try:
        kwargs = process._platform_kwargs()
    finally:
        monkeypatch.setattr(os, "name", "posix")
    assert kwargs["creationflags"] == process.CREATE_NEW_PROCESS_GROUP | process.CREATE_NO_WINDOW
    info = kwargs["startupinfo"]
    assert info.dwFlags & process.STARTF_USESHOWWINDOW and info.wShowWindow == process.SW_HIDE
    assert process._platform_kwargs() == {"start_new_session": True}


def test_windows_stop_needs_no_posix_signal_and_cleans_up(monkeypatch, tmp_path):
    """Windows' signal module has no SIGKILL: closing a worker and cancelling a run must not touch it. taskkill ends
    the tree (the child cannot clean up), so the run's temporary folder is removed here; nothing that was there
    before the run, nor the user's previous output being swapped (.NAME.old-PID), is touched."""
    import signal

    from brainxai.app import process

    taskkills, sigkill = [], signal.SIGKILL

    def taskkill(cmd, **kwargs):  # stands in for Windows' taskkill /T /F: ends the process tree
        assert cmd[:3] == ["taskkill", "/T", "/F"] and kwargs["creationflags"] == process.CREATE_NO_WINDOW
        taskkills.append(cmd)
        os.killpg(int(cmd[-1]), sigkill)

    worker = WarmWorker.__new__(WarmWorker)
    worker.child = process._Child(process._spawn([sys.executable, "-c", "import time; time.sleep(60)"], child_env()))
    out = tmp_path / "out"
    before = [tmp_path / ".out.before01", tmp_path / ".out.old-4242"]
    for path in before:
        path.mkdir()
    job = BackgroundExplain(None, out, python=sys.executable)
    job.command = [sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"]
    job.start()
    (tmp_path / ".out.k3j2h1g0").mkdir()  # what the killed child was writing
    monkeypatch.delattr(signal, "SIGKILL")
    monkeypatch.setattr(process.subprocess, "run", taskkill)
    monkeypatch.setattr(os, "name", "nt")
    try:
        worker.close()
        job.cancel(wait=True)
    finally:
        monkeypatch.setattr(os, "name", "posix")
    assert len(taskkills) == 2 and not worker.alive and not job.running
    with pytest.raises(BrainXAIError):
        job.wait(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.before01", ".out.old-4242"]
