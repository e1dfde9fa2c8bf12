"""The background run the Slicer module uses: a real child process, progress lines, cancel of the process tree."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import brainxai
from brainxai.errors import BrainXAIError
from brainxai.process import BackgroundExplain, WarmWorker, child_env


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
    job = BackgroundExplain(None, tmp_path / "out", methods=("gradcam++",), max_cam_slices=2).start(worker)
    seen = []
    while job.running:
        p = job.poll()
        if not seen or seen[-1] != (p.stage, p.fraction):
            seen.append((p.stage, p.fraction))
        time.sleep(0.05)
    assert job.wait() == 0
    assert job.stages == ["preprocess", "register", "load", "model", "explain", "threshold", "atlas", "report"], \
        job.stages
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and job.last.fraction == pytest.approx(1.0)
    assert (tmp_path / "out" / "findings.json").is_file()
    if worker is not None:
        assert not worker.alive  # one job, then it ends: nothing of this run stays for the next


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
    job = BackgroundExplain(brats_path, tmp_path / "out", methods=("scorecam",)).start(worker)
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
        job = BackgroundExplain(None, tmp_path / "out", methods=("gradcam++",), max_cam_slices=2, llm="vllm",
                                llm_settings={"base_url": server.url + "/v1", "model": "correct"}).start(worker)
        assert job.wait(600) == 0
        assert server.requests and server.requests[-1]["path"] == "/v1/chat/completions"
    record = json.loads((tmp_path / "out" / "report_llm.json").read_text(encoding="utf-8"))
    assert record["source"] == "llm" and record["attempts"][0]["verification"]["passed"]
    assert "<html>" in (tmp_path / "out" / "report_llm.html").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "report.html").is_file()  # the built-in report stays beside it
