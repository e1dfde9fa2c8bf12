"""Python dependencies of the Slicer module: checked from package metadata, installed only after the user agrees.

Inside Slicer, torch and torchvision come from the PyTorch extension (PyTorchUtils picks the build for the machine's
GPU driver) and the rest from the module's requirements.txt: through `slicer.packaging.pip_ensure` where it exists
(Slicer 5.12+, a lazily imported submodule) and through a confirmation dialog and `slicer.util.pip_install` on 5.10.
Nothing is imported here beyond package metadata, so the check itself never loads torch into the GUI process
(PyTorchUtils imports torch once it has installed it).

The Slicer calls follow Slicer's source: slicer.packaging.pip_ensure raises RuntimeError("User declined package
installation") when the user says no, and CalledProcessError when pip fails after showing its own dialog with pip's
log (Base/Python/slicer/packaging.py, v5.12);
PyTorchUtilsLogic.installTorch returns None when the user declines and lets pip's CalledProcessError through
(SlicerPyTorch, PyTorchUtils/PyTorchUtils.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
from importlib import metadata
from pathlib import Path

PIP_ENSURE_DECLINED = "User declined package installation"  # slicer.packaging.pip_ensure's message


def missing_requirements(path: str | Path) -> list[str]:
    """The lines of a requirements file this Python does not satisfy, read from package metadata."""
    from packaging.requirements import Requirement

    missing = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):  # pip options, as slicer.packaging.load_requirements skips them
                continue
            req = Requirement(line)
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                missing.append(str(req))
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                missing.append(str(req))
    return missing


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def installed(path: str | Path) -> bool:
    return torch_installed() and not missing_requirements(path)


def _packaging_module():
    """slicer.packaging on Slicer 5.12+, None on 5.10 (it is a submodule that must be imported, not an attribute)."""
    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None


def _install_torch(slicer) -> bool:
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("BrainXAI needs the PyTorch extension: install it from the Extensions Manager, "
                                 "restart Slicer and try again.")
        return False
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return True
    try:
        torch = logic.installTorch(askConfirmation=True)
    except Exception as exc:  # noqa: BLE001 - pip's CalledProcessError or light-the-torch's own: one line to the user
        slicer.util.errorDisplay(f"BrainXAI could not install PyTorch ({type(exc).__name__}: {exc}); see the "
                                 "Python console for pip's output, check the network, and try again.")
        return False
    return torch is not None  # None: the user declined


def _install_requirements(slicer, path: Path, missing: list[str], requester: str) -> bool:
    packaging = _packaging_module()
    if packaging is not None and hasattr(packaging, "pip_ensure"):  # Slicer 5.12+: its own dialogs and progress
        try:
            # What this check found missing, not the file re-read: one parser decides, and pip_ensure re-checks.
            packaging.pip_ensure(missing, prompt_install=True, requester=requester)
        except subprocess.CalledProcessError as exc:  # pip_ensure has shown the failure and pip's log already
            logging.error("BrainXAI: installing %s failed (%s)", ", ".join(missing), exc)
            return False
        except RuntimeError as exc:
            if str(exc) != PIP_ENSURE_DECLINED:
                slicer.util.errorDisplay(f"BrainXAI could not install its Python packages ({exc}); see the Python "
                                         "console.")
            return False
        return True
    try:  # Slicer 5.10
        if not slicer.util.confirmOkCancelDisplay(
                "BrainXAI needs these Python packages: " + ", ".join(missing) + ". Install them now? This can "
                "take several minutes.", windowTitle=requester):
            return False
        slicer.util.pip_install(["-r", str(path)])
    except Exception as exc:  # noqa: BLE001 - pip failed: one line, pip's log is in the Python console
        slicer.util.errorDisplay(f"BrainXAI could not install its Python packages ({type(exc).__name__}: {exc}); "
                                 "see the Python console.")
        return False
    return True


def ensure(slicer, path: str | Path, requester: str = "BrainXAI") -> bool:
    """Install what is missing after the user agrees; True when everything is there. `slicer` is Slicer's module
    (dialogs and pip through slicer.util). Never called at import time."""
    path = Path(path)
    if installed(path):
        return True
    if not torch_installed() and not _install_torch(slicer):
        return False
    missing = missing_requirements(path)
    if missing and not _install_requirements(slicer, path, missing, requester):
        return False
    still = ([] if torch_installed() else ["torch"]) + missing_requirements(path)
    if still:
        slicer.util.errorDisplay("BrainXAI's Python packages are still missing (" + ", ".join(still) + "): restart "
                                 "Slicer, or install them from the Python console with slicer.util.pip_install.")
        return False
    return True


def total_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where it cannot be read."""
    import os

    if os.name == "nt":
        import ctypes

        class MEMORYSTATUSEX(ctypes.Structure):  # winbase.h
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = MEMORYSTATUSEX()
        status.dwLength = ctypes.sizeof(MEMORYSTATUSEX)
        if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return None
        return int(status.ullTotalPhys)
    try:  # Linux and macOS
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


# An idle warm worker holds the torch stack and the weights, about 1 GB. It is kept by default only where that is a
# small share of the machine: from a "16 GB" machine up (which reports about 15.5 GiB).
WARM_BY_DEFAULT_FROM = 15 << 30


def keep_worker_warm_by_default(total: int | None = None) -> bool:
    total = total_memory_bytes() if total is None else total
    return total is not None and total >= WARM_BY_DEFAULT_FROM
