"""Pre-flight: the checks `brainxai explain` makes before its model runs (load-stage integrity, not-an-MRI, and with
registration the not-a-brain check), on many inputs at once, so a cohort's bad files are found in seconds and the
refusal rates can be measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from .errors import BrainXAIError

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg")


def inputs_under(paths: list[Path]) -> Iterator[Path]:
    """Each input: a file as given; a folder's image files (recursively) and its DICOM series folders."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name.lower().endswith(SUFFIXES)
                 and not p.name.lower().endswith("_mask.nii.gz")]
        found += sorted({p.parent for p in path.rglob("*.dcm")})
        yield from found or [path]  # a folder with nothing else: read as a DICOM folder, which says what is wrong


def check_one(path: Path, register: bool = False) -> dict:
    """{"path", "status": "ok" | "warned" | "refused", "message"}: what explain would do with it before the model."""
    from .load import read_input

    try:
        image, info = read_input(path)
        if register and info.kind == "volume":
            from .guard import refuse_if_not_brain
            from .mni.register import register_to_mni

            refuse_if_not_brain(register_to_mni(image), path.name)
    except BrainXAIError as exc:
        return {"path": str(path), "status": "refused", "message": str(exc)}
    return {"path": str(path), "status": "warned" if info.warnings else "ok", "message": " ".join(info.warnings)}


def check_all(paths: list[Path], register: bool = False,
              progress: Callable[[int, int], None] | None = None) -> dict:
    files = list(inputs_under(paths))
    rows = []
    for i, path in enumerate(files):
        rows.append(check_one(path, register))
        if progress:
            progress(i + 1, len(files))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "warned", "refused")}
    return {"inputs": len(rows), "registered": register, **counts, "rows": rows}


def write_json(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
