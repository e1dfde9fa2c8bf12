"""Structured findings: the de-identified JSON that every report statement must trace back to.

Paths in error messages are JSON pointers (RFC 6901), the same notation report statements use for their sources.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from brainxai.errors import BrainXAIError

SCHEMA_VERSION = "1.3"  # 1.1: input_check; 1.2: a counterfactual per explanation; 1.3: minimal evidence, enhancement
_SCHEMA_RESOURCE = ("schema", "findings.schema.json")

# Each pattern names what it caught, so the user knows what to strip upstream.
# Alphanumeric look-arounds keep hex digests and version strings from matching as dates.
_IDENTIFIER_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a DICOM-style date (YYYYMMDD)",
     re.compile(r"(?<![0-9A-Za-z])(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?![0-9A-Za-z])")),
    ("a calendar date",
     re.compile(r"(?<![0-9A-Za-z])(?:19|20)\d\d[-/](?:0[1-9]|1[0-2])[-/](?:0[1-9]|[12]\d|3[01])(?!\d)")),
    ("a long digit run that may be an identifier", re.compile(r"(?<![0-9A-Za-z.])\d{7,}(?![0-9A-Za-z]|\.\d)")),
    ("a DICOM person name (contains '^')", re.compile(r"\^")),
    ("an e-mail address", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("a file path", re.compile(r"(?:^|[\s\"'(=])(?:~|[A-Za-z]:|\.{1,2})?[\\/][^\s\\/]+[\\/]|\\\\|[A-Za-z]:\\")),
    ("a file name", re.compile(
        r"\.(?:nii(?:\.gz)?|dcm|dicom|ima|mgz|mgh|mha|mhd|nrrd|img|hdr|png|jpe?g|tiff?|bmp|pt|pth)(?![0-9A-Za-z])", re.I)),
    ("a DICOM UID", re.compile(r"(?<![\d.])[12](?:\.\d+){5,}")),
)

# Key names are compared with separators and case removed, so PatientName, patient_name and patient-name all match.
_IDENTIFIER_KEYS = (
    "patient", "birth", "dob", "accession", "institution", "physician", "referring", "operator",
    "address", "phone", "email", "filename", "filepath", "studydate", "seriesdate", "acquisitiondate",
    "contentdate", "studyinstance", "seriesinstance", "sopinstance",
)


def pointer(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """JSON pointer for a path of keys/indices ('/' for the document root)."""
    if not parts:
        return "/"
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(findings: Any, ptr: str) -> Any:
    """Value at JSON pointer `ptr`; raises KeyError/IndexError if it does not exist."""
    if ptr in ("", "/"):
        return findings
    node = findings
    for raw in ptr.lstrip("/").split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not key.isdigit():
                raise KeyError(ptr)
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node[key]
        else:
            raise KeyError(ptr)
    return node


def load_schema() -> dict:
    """A fresh copy of the findings JSON Schema shipped as package data."""
    ref = resources.files("brainxai").joinpath(*_SCHEMA_RESOURCE)
    return json.loads(ref.read_text(encoding="utf-8"))


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, node) of a JSON document, containers included, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


def assert_deidentified(findings: Any) -> None:
    """Raise BrainXAIError if any key or string value looks like a patient identifier, date, e-mail or path."""
    for path, node in walk(findings):
        if isinstance(node, dict):
            for key in node:
                flat = re.sub(r"[^a-z0-9]", "", str(key).lower())
                hit = next((k for k in _IDENTIFIER_KEYS if k in flat), None)
                if hit:
                    raise BrainXAIError(
                        f"findings {pointer((*path, key))}: key looks like a patient identifier ({hit!r}); "
                        "findings must be de-identified")
        if isinstance(node, str):
            for what, pattern in _IDENTIFIER_PATTERNS:
                if pattern.search(node):
                    raise BrainXAIError(
                        f"findings {pointer(path)}: value contains {what}; findings must be de-identified")


def _check_semantics(findings: dict) -> None:
    """Rules JSON Schema cannot express."""
    for path, node in walk(findings):
        if isinstance(node, float) and not math.isfinite(node):
            raise BrainXAIError(f"findings {pointer(path)}: {node} is not a finite number")
    probs = findings["diagnosis"]["probabilities"]
    total = sum(probs.values())
    if abs(total - 1.0) > 0.01:
        raise BrainXAIError(
            f"findings /diagnosis/probabilities: probabilities sum to {total:.3f}, expected 1 (softmax output)")
    diagnosis = findings["diagnosis"]
    if diagnosis["slices_with_tumor_evidence"] > diagnosis["slices_total"]:
        raise BrainXAIError("findings /diagnosis/slices_with_tumor_evidence: exceeds /diagnosis/slices_total")


def validate(findings: dict) -> None:
    """Raise BrainXAIError (one line, naming the JSON pointer) unless `findings` is valid and de-identified."""
    # The identifier guard runs first: its message says *why* a key is unwelcome, the schema's only that it is unknown.
    assert_deidentified(findings)
    error = best_match(_validator().iter_errors(findings))
    if error is not None:
        message = " ".join(error.message.split())
        if len(message) > 200:
            message = message[:197] + "..."
        raise BrainXAIError(f"findings {pointer(list(error.absolute_path))}: {message}")
    _check_semantics(findings)


def write_findings(findings: dict, path: str | Path) -> Path:
    """Write `findings` as pretty UTF-8 JSON; returns the path written. Findings are validated where they enter
    (built by the pipeline, read from disk, handed to an LLM); a writer only makes sure no identifier reaches disk."""
    assert_deidentified(findings)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(findings, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_findings(path: str | Path) -> dict:
    """Load and validate a findings file written by write_findings."""
    path = Path(path)
    try:
        findings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BrainXAIError(f"findings file not found: {path}; run the analysis first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BrainXAIError(f"findings file is not valid JSON: {path} ({exc})") from None
    validate(findings)
    return findings
