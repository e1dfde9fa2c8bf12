"""Faults during a run (issue 18, outcome 4): a killed run, a full disk, two runs for one folder, damaged weights,
an interrupted rethreshold. Each leaves the output folder complete or absent, says one line, and the next run works."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai import cli, output, pipeline, rethreshold
from brainxai.errors import BrainXAIError
from brainxai.load import InputInfo
from brainxai.model import load_model
from brainxai.model_config import weights_path
from brainxai.phantom import PHANTOM_WARNING, make_phantom

FAST = pipeline.Options(methods=("gradcam++",), max_cam_slices=6)
DEMO = ["explain", "--demo", "--methods", "gradcam++", "--max-cam-slices", "6", "--out"]


@pytest.fixture(scope="module")
def demo_result():
    return pipeline.analyse(make_phantom(), InputInfo("volume", "synthetic"), FAST, phantom=True,
                            warnings=[PHANTOM_WARNING])


@pytest.fixture()
def quick(monkeypatch, demo_result):
    """`brainxai explain --demo` whose analysis is the module's one run: the faults here are in what follows."""
    monkeypatch.setattr(pipeline, "analyse", lambda *a, **k: demo_result)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("brainxai: error: ") and "Traceback" not in err[0], err
    return err[0]


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def complete(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return {"findings.json", "report.md", "report.html", "overview.png", "heatmap_gradcam++.nii.gz",
            "mask_gradcam++.nii.gz", "tumor_segmentation.nii.gz", "mni"} <= names


def test_a_second_run_for_the_same_folder_refuses_and_a_killed_holder_frees_it(tmp_path, quick, capsys):
    out = tmp_path / "same out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom brainxai import output\nwith output.claim(sys.argv[1]):\n"
         "    print('held', flush=True)\n    time.sleep(300)\n", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(DEMO + [str(out)]) == 2
        assert "another BrainXAI run is writing" in one_line(capsys) and not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash would: the kernel drops its lock
        holder.wait()
    assert cli.main(DEMO + [str(out)]) == 0 and complete(out) and siblings(out) == []


def test_killed_mid_write_leaves_no_folder_and_the_next_run_clears_what_it_left(tmp_path, quick):
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "brainxai"] + DEMO + [str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not siblings(out) and run.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)  # the staging folder exists: it is writing
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the run ended before it began writing"
    assert not out.exists() and len(siblings(out)) == 1  # never a partial OUT; its staging is all it left
    assert cli.main(DEMO + [str(out)]) == 0 and complete(out) and siblings(out) == []


def test_killed_between_the_two_moves_of_overwrite_the_previous_folder_comes_back(tmp_path):
    out = tmp_path / "out"
    previous = tmp_path / ".out.old-4242"  # the user's previous output, moved aside by a killed --overwrite
    previous.mkdir()
    (previous / "findings.json").write_text("{}", encoding="utf-8")
    (tmp_path / ".out.k2j4_x9a").mkdir()  # the new output's staging (not known to be complete)
    (tmp_path / ".out.notes").mkdir()  # not a name BrainXAI gives: never touched
    with output.claim(out):
        assert (out / "findings.json").read_text(encoding="utf-8") == "{}"
    assert siblings(out) == [".out.notes"]


def test_disk_full_and_a_failing_writer_are_one_line_and_leave_nothing(tmp_path, quick, capsys, monkeypatch):
    out = tmp_path / "out"
    write_findings = pipeline.findings_mod.write_findings

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline.findings_mod, "write_findings", full)
    assert cli.main(DEMO + [str(out)]) == 2
    assert "is full: free some space" in one_line(capsys) and not out.exists() and siblings(out) == []
    monkeypatch.setattr(pipeline.findings_mod, "write_findings", write_findings)

    def broken(*_a, **_k):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: nifti write failed\n  detail")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    assert cli.main(DEMO + [str(out)]) == 2
    line = one_line(capsys)
    assert "failed (Exception thrown in SimpleITK ImageFileWriter_Execute: nifti write failed)" in line
    assert not out.exists() and siblings(out) == []


def test_damaged_or_replaced_weights_are_refused(tmp_path):
    shipped = weights_path(None)
    pt, card = tmp_path / shipped.name, tmp_path / shipped.with_suffix(".json").name
    shutil.copy(shipped.with_suffix(".json"), card)
    raw = shipped.read_bytes()
    pt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BrainXAIError, match="cannot read model weights"):
        load_model(pt)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01  # one bit of one weight: it still loads, and would answer differently
    pt.write_bytes(bytes(flipped))
    with pytest.raises(BrainXAIError, match="do not match their card .* damaged or was replaced"):
        load_model(pt)
    pt.write_bytes(raw)
    assert load_model(pt).sha256 == json.loads(card.read_text(encoding="utf-8"))["weights_sha256"]


@pytest.fixture()
def result_folder(tmp_path, demo_result) -> Path:
    return pipeline.write_outputs(demo_result, tmp_path / "res")


def state(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_rethreshold_interrupted_before_its_commit_leaves_the_folder_as_it_was(result_folder, monkeypatch):
    before = state(result_folder)
    (result_folder / "report_llm.md").write_text("for the old threshold", encoding="utf-8")
    before["report_llm.md"] = b"for the old threshold"

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rethreshold.report, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        rethreshold.rethreshold(result_folder, "gradcam++", 97)
    assert state(result_folder) == before  # nothing replaced, no staging left


def test_rethreshold_interrupted_mid_commit_is_finished_by_the_next_call(result_folder, monkeypatch):
    (result_folder / "report_llm.md").write_text("for the old threshold", encoding="utf-8")
    real, moved = os.replace, []

    def killed_after_one(src, dst):
        if moved and "commit.json" not in str(dst):
            raise KeyboardInterrupt  # the process dies between two files
        if "commit.json" not in str(dst):
            moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(rethreshold.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        rethreshold.rethreshold(result_folder, "gradcam++", 97)
    monkeypatch.undo()
    findings = json.loads((result_folder / "findings.json").read_text(encoding="utf-8"))
    assert next(e for e in findings["explanations"])["threshold_percentile"] != 97  # half-done: the mask moved
    rethreshold.finish_interrupted(result_folder)
    findings = json.loads((result_folder / "findings.json").read_text(encoding="utf-8"))
    entry = next(e for e in findings["explanations"] if e["method"] == "gradcam++")
    mask = sitk.ReadImage(str(result_folder / "mask_gradcam++.nii.gz"))
    voxel_ml = np.prod(mask.GetSpacing()) / 1000
    assert entry["threshold_percentile"] == 97
    assert entry["mask_volume_ml"] == pytest.approx(sitk.GetArrayFromImage(mask).sum() * voxel_ml, abs=1e-3)
    assert "percentile 97" in (result_folder / "report.md").read_text(encoding="utf-8")
    assert not (result_folder / "report_llm.md").exists()
    assert not [p for p in result_folder.iterdir() if p.name.startswith(".")]
