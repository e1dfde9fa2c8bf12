"""An output folder is complete or absent: one run at a time writes it, and what a killed run left is cleared.

`explain` writes into a hidden sibling (`.NAME.XXXX`) and moves it into place; with --overwrite the previous folder
is first moved aside to `.NAME.old-PID`. A run killed at any point leaves at most those siblings, which the next run
for the same folder removes (restoring the previous folder if it was killed between the two moves). Two runs for the
same folder: the second refuses at once (an OS file lock, released by the kernel even on SIGKILL).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .mni.cache import cache_dir
from .errors import BrainXAIError

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _lock_path(out_dir: Path) -> Path:
    # Outside the user's folders; keyed by the folder's absolute path.
    key = hashlib.sha256(str(out_dir).encode()).hexdigest()[:24]
    for base in (cache_dir() / "locks", Path(tempfile.gettempdir()) / "brainxai-locks"):
        try:
            base.mkdir(parents=True, exist_ok=True)
            return base / f"{key}.lock"
        except OSError:
            continue
    raise BrainXAIError("no writable folder for BrainXAI's output lock: set XDG_CACHE_HOME to a writable folder")


@contextmanager
def claim(out_dir: str | Path) -> Iterator[Path]:
    """Hold OUT for one run; another run for OUT (this or another process) refuses instead of racing it."""
    out = Path(out_dir).resolve()
    lock = FileLock(_lock_path(out), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BrainXAIError(f"another BrainXAI run is writing {out}: wait for it to finish or choose another "
                            "--out") from None
    try:
        recover(out)
        yield out
    finally:
        lock.release()


def leftovers(out: Path) -> tuple[list[Path], list[Path]]:
    """(staging folders, previous folders moved aside) that runs for OUT left beside it."""
    if not out.parent.is_dir():
        return [], []
    # only the names BrainXAI gives them: tempfile.mkdtemp's 8 characters, or old-PID
    ours = re.compile(rf"\.{re.escape(out.name)}\.(?:(?P<old>old-\d+)|[a-z0-9_]{{8}})")
    found = [(p, m) for p in out.parent.glob(f".{out.name}.*") if p.is_dir() and (m := ours.fullmatch(p.name))]
    old = sorted((p for p, m in found if m["old"]), key=lambda p: p.stat().st_mtime)
    return [p for p, m in found if not m["old"]], old


def recover(out: Path) -> None:
    """Clear what a killed run for OUT left; call only while holding `claim(OUT)`."""
    staging, old = leftovers(out)
    if old and not out.exists():  # killed between moving the previous folder aside and moving the new one in
        os.replace(old.pop(), out)
    for path in staging + old:
        shutil.rmtree(path, ignore_errors=True)


def write_error(exc: BaseException, where: Path) -> BrainXAIError:
    """One line for a failure while writing outputs under WHERE (disk full, no permission, a writer's error)."""
    if isinstance(exc, OSError):
        full = exc.errno in _FULL
    else:  # SimpleITK reports a failed write as a RuntimeError: say whether the disk is the reason
        try:
            full = shutil.disk_usage(where).free < 64 * 2**20
        except OSError:
            full = False
    if full:
        return BrainXAIError(f"the disk holding {where} is full: free some space and run again (nothing was written)")
    if isinstance(exc, OSError):
        return BrainXAIError(f"cannot write to {where}: {exc.strerror or exc}; check the folder's permissions "
                             "(nothing was written)")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), exc.__class__.__name__)
    return BrainXAIError(f"writing the outputs in {where} failed ({first[:200]}); nothing was written")
