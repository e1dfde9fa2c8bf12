"""brainxai.app.dependencies: what the Slicer module does when packages are missing, on Slicer 5.10 (no
slicer.packaging) and 5.12+ (slicer.packaging.pip_ensure), with the PyTorch extension present or not.

Slicer's installers and dialogs are stand-ins that record what they were asked and behave as Slicer's source says:
pip_ensure raises RuntimeError("User declined package installation") on a no and CalledProcessError when pip fails
(Base/Python/slicer/packaging.py, v5.12.0); PyTorchUtilsLogic.installTorch returns None on a no and lets pip's
CalledProcessError through (SlicerPyTorch PyTorchUtils/PyTorchUtils.py). Nothing is installed for real.
"""

import subprocess
import sys
import types

import pytest

from brainxai.app import dependencies

MISSING = "brainxai-no-such-package>=1"


class Util:
    def __init__(self, confirm=True, pip_error=None):
        self.errors, self.confirms, self.pips, self.confirm, self.pip_error = [], [], [], confirm, pip_error

    def errorDisplay(self, text, **kwargs):
        assert "\n" not in text
        self.errors.append(text)

    def confirmOkCancelDisplay(self, text, windowTitle=None, **kwargs):
        self.confirms.append(text)
        return self.confirm

    def pip_install(self, requirements):
        self.pips.append(requirements)
        if self.pip_error:
            raise self.pip_error


def fake_slicer(**util):
    return types.SimpleNamespace(util=Util(**util))


def packaging_module(behaviour):
    """slicer.packaging of Slicer 5.12+: pip_ensure declines, fails, or installs nothing (the test's package stays
    missing)."""
    m = types.ModuleType("slicer.packaging")
    m.calls = []
    m.load_requirements = lambda path: [line.strip() for line in open(path) if line.strip()]

    def pip_ensure(requirements, prompt_install=True, requester=None, **kwargs):
        assert isinstance(requirements, list) and all(isinstance(r, str) for r in requirements)
        m.calls.append((requirements, prompt_install, requester))
        if behaviour == "decline":
            raise RuntimeError("User declined package installation")
        if behaviour == "fail":
            raise subprocess.CalledProcessError(1, ["pip", "install"])
        if behaviour == "other":
            raise RuntimeError("Slicer's package manager is busy")

    m.pip_ensure = pip_ensure
    return m


@pytest.fixture(autouse=True)
def torch_present(monkeypatch):
    """torch counts as installed unless a test says otherwise (the tests about it patch it again)."""
    monkeypatch.setattr(dependencies, "torch_installed", lambda: True)


@pytest.fixture()
def reqs(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text(f"# comment\n\npip>=1  # satisfied\n{MISSING}\n", encoding="utf-8")
    return path


@pytest.fixture()
def slicer_510(monkeypatch):
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # `import slicer.packaging` raises ImportError


def test_missing_requirements_reads_metadata_without_importing(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# a comment\n\npip>=1  # satisfied\nnumpy<1\n-r other.txt\nbrainxai-no-such-package>=1\n",
                    encoding="utf-8")
    assert "pip" not in sys.modules  # installed, never imported by the check
    assert dependencies.missing_requirements(path) == ["numpy<1", MISSING]
    assert "pip" not in sys.modules


def test_everything_installed_asks_nothing(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("numpy\n", encoding="utf-8")
    s = fake_slicer()
    assert dependencies.ensure(s, path) and s.util.confirms == [] and s.util.pips == []


@pytest.mark.parametrize("answer", [True, False], ids=["agrees", "declines"])
def test_slicer_510_asks_then_pip_installs_the_file(reqs, slicer_510, answer):
    s = fake_slicer(confirm=answer)
    assert dependencies.ensure(s, reqs) is False  # the fake pip installs nothing: still missing, or declined
    assert MISSING in s.util.confirms[0]
    if answer:
        assert s.util.pips == [["-r", str(reqs)]] and "still missing" in s.util.errors[-1]
    else:
        assert s.util.pips == [] and s.util.errors == []  # a "no" is not an error


def test_slicer_510_pip_failure_is_one_line(reqs, slicer_510):
    s = fake_slicer(pip_error=subprocess.CalledProcessError(1, ["pip"]))
    assert dependencies.ensure(s, reqs) is False
    assert len(s.util.errors) == 1 and "could not install its Python packages (CalledProcessError" in s.util.errors[0]


@pytest.mark.parametrize("behaviour,error", [("decline", None), ("fail", None), ("other", "busy"),
                                             ("nothing", "still missing")])
def test_slicer_512_uses_pip_ensure(reqs, monkeypatch, behaviour, error):
    packaging = packaging_module(behaviour)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    s = fake_slicer()
    assert dependencies.ensure(s, reqs) is False
    assert packaging.calls and packaging.calls[0][1:] == (True, "BrainXAI") and MISSING in packaging.calls[0][0]
    assert s.util.confirms == [] and s.util.pips == []  # pip_ensure has its own dialog
    if error is None:  # declined: silent (only that exact RuntimeError); pip failed: pip_ensure showed its log
        assert s.util.errors == []
    else:
        assert len(s.util.errors) == 1 and error in s.util.errors[0]


def pytorch_utils(monkeypatch, outcome):
    calls = []

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            return False

        def installTorch(self, askConfirmation=False):
            calls.append(askConfirmation)
            if outcome == "fail":
                raise subprocess.CalledProcessError(1, ["light-the-torch", "install", "torch"])
            return None if outcome == "decline" else types.SimpleNamespace(__version__="2.x")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    return calls


@pytest.mark.parametrize("outcome", ["decline", "fail"])
def test_torch_from_the_pytorch_extension(tmp_path, monkeypatch, outcome):
    path = tmp_path / "r.txt"
    path.write_text("numpy\n", encoding="utf-8")
    calls = pytorch_utils(monkeypatch, outcome)
    s = fake_slicer()
    assert dependencies.ensure(s, path) is False and calls == [True]  # always asks first
    if outcome == "decline":
        assert s.util.errors == []
    else:  # a failed install is one clear line, not a traceback out of Apply
        assert len(s.util.errors) == 1 and "could not install PyTorch (CalledProcessError" in s.util.errors[0]


def test_no_pytorch_extension_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "r.txt"
    path.write_text("numpy\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    s = fake_slicer()
    assert dependencies.ensure(s, path) is False and "PyTorch extension" in s.util.errors[0]


def test_keep_worker_warm_by_default_follows_the_machines_memory(monkeypatch):
    gib = 1 << 30
    assert not dependencies.keep_worker_warm_by_default(8 * gib)
    assert dependencies.keep_worker_warm_by_default(int(15.6 * gib))  # a "16 GB" machine
    total = dependencies.total_memory_bytes()
    assert total is not None and total > gib  # Linux / macOS: sysconf

    class Kernel32:  # Windows: GlobalMemoryStatusEx fills the structure it is given
        @staticmethod
        def GlobalMemoryStatusEx(pointer):
            status = pointer._obj
            status.ullTotalPhys = 32 * gib
            return 1

    import ctypes
    import os

    monkeypatch.setattr(ctypes, "windll", types.SimpleNamespace(kernel32=Kernel32()), raising=False)
    monkeypatch.setattr(os, "name", "nt")
    try:
        assert dependencies.total_memory_bytes() == 32 * gib
    finally:
        monkeypatch.setattr(os, "name", "posix")
