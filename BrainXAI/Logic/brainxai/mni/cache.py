"""Arrays derived from packaged data (atlas maps, template pyramids), kept in the user's cache between runs.

Keyed by the source file (path, size, mtime) and a version string, so a reinstalled atlas or a change in how the
arrays are derived gives a new entry. Files are written whole or not at all; a damaged one is rebuilt; with no
writable cache the arrays are simply recomputed next time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "brainxai"


def cache_file(kind: str, source: Path, version: str = "1") -> Path:
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{version}".encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{key}.npz"


def derived_arrays(kind: str, source: Path, build: Callable[[], dict[str, np.ndarray]], version: str = "1",
                   compress: bool = True) -> dict[str, np.ndarray]:
    """`build()`'s arrays, from the cache when an entry for `source` exists, else built and stored."""
    path = cache_file(kind, source, version)
    if path.is_file():
        try:
            with np.load(path) as d:
                return {k: d[k] for k in d.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged entry is rebuilt
            pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                (np.savez_compressed if compress else np.savez)(f, **arrays)
            os.replace(tmp, path)  # a concurrent reader never sees half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass
    return arrays
