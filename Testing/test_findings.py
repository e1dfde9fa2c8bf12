"""Findings schema, validation and the de-identification guard (the findings cases are in helpers.py)."""

import copy
import json
import math

import jsonschema
import pytest

from brainxai import CLASSES
from brainxai.errors import BrainXAIError
from brainxai.reporting.findings import (SCHEMA_VERSION, assert_deidentified, load_schema, read_findings, resolve,
                                         validate, write_findings)

from helpers import ALL_CASES, SHA, glioma_case, no_tumor_case, phantom_case, slice_case  # noqa: F401


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.__name__)
def test_realistic_cases_validate(case):
    validate(case())


def test_schema_is_valid_draft_2020_12_and_versioned():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    # 1.1 added the optional input_check, 1.2 the optional counterfactuals, 1.3 minimal evidence and enhancement:
    # findings written before stay valid
    assert schema["properties"]["schema_version"] == {"enum": ["1.0", "1.1", "1.2", SCHEMA_VERSION]}
    assert set(schema["required"]) >= {"schema_version", "input", "model", "diagnosis", "lesion", "regions", "atlas",
                                       "explanations", "registration", "warnings", "software"}


def test_every_object_in_schema_is_closed():
    def walk(node, path="#"):
        if isinstance(node, dict):
            types = node.get("type")
            if "properties" in node or types == "object" or (isinstance(types, list) and "object" in types):
                assert node.get("additionalProperties") is False, f"{path} is open to extra keys"
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")
    walk(load_schema())


def test_schema_has_no_identifier_fields():
    text = json.dumps(load_schema()["properties"]).lower()
    for word in ("patient", "birth", "date", "institution", "filename", "path", "accession"):
        assert f'"{word}' not in text


@pytest.mark.parametrize("ptr", ["/schema_version", "/input", "/model", "/diagnosis", "/lesion", "/regions", "/atlas",
                                 "/explanations", "/registration", "/warnings", "/software", "/input/phantom",
                                 "/model/sha256", "/diagnosis/probabilities/pituitary", "/lesion/volume_ml",
                                 "/regions/1/percent_of_region", "/explanations/2/dice_vs_segmentation",
                                 "/registration/converged"])
def test_missing_key_rejected_naming_it(ptr):
    f = glioma_case()
    *parent, key = ptr.strip("/").split("/")
    del resolve(f, "/" + "/".join(parent))[key]
    with pytest.raises(BrainXAIError, match=f"'{key}' is a required property"):
        validate(f)


@pytest.mark.parametrize("value", [1.5, -0.01, "0.9", None])
def test_bad_probability_rejected_with_pointer(value):
    f = glioma_case()
    f["diagnosis"]["probabilities"]["glioma"] = value
    with pytest.raises(BrainXAIError) as exc:
        validate(f)
    msg = str(exc.value)
    assert "/diagnosis/probabilities/glioma" in msg and "\n" not in msg


def test_probabilities_must_sum_to_one():
    f = glioma_case()
    f["diagnosis"]["probabilities"] = {c: 0.5 for c in CLASSES}
    with pytest.raises(BrainXAIError, match="/diagnosis/probabilities"):
        validate(f)


def test_non_finite_number_rejected():
    f = glioma_case()
    f["lesion"]["volume_ml"] = math.nan
    with pytest.raises(BrainXAIError, match="/lesion/volume_ml"):
        validate(f)


def test_evidence_slices_cannot_exceed_total():
    f = glioma_case()
    f["diagnosis"]["slices_with_tumor_evidence"] = 156
    with pytest.raises(BrainXAIError, match="slices_with_tumor_evidence"):
        validate(f)


@pytest.mark.parametrize("where", ["", "/input", "/lesion", "/regions/0", "/explanations/1", "/registration",
                                   "/diagnosis/probabilities", "/software"])
@pytest.mark.parametrize("key", ["patient_name", "PatientID", "StudyDate", "institution", "source_file_path"])
def test_identifier_key_rejected_anywhere(where, key):
    f = glioma_case()
    resolve(f, where or "/")[key] = "x"
    with pytest.raises(BrainXAIError, match="de-identified") as exc:
        validate(f)
    assert f"{where}/{key}" in str(exc.value)


@pytest.mark.parametrize("where", ["", "/input", "/regions/2", "/registration"])
def test_unknown_key_rejected_even_if_harmless(where):
    f = glioma_case()
    resolve(f, where or "/")["comment"] = "hello"
    with pytest.raises(BrainXAIError, match="comment"):
        validate(f)


@pytest.mark.parametrize("ptr, value, what", [
    ("/warnings/0", "Scan acquired 20230115 on the 3T unit.", "date"),
    ("/warnings/0", "Study of 2023-01-15.", "date"),
    ("/lesion/peak_region", "DOE^JOHN", "person name"),
    ("/atlas/name", "/home/radiology/atlases/ho.nii.gz", "path"),
    ("/model/name", "C:\\Users\\rad\\model", "path"),
    ("/software/name", "scan_0042.nii.gz", "file name"),
    ("/registration/stop_condition", "converged for IMG0001.dcm", "file name"),
    ("/software/version", "jane.doe@hospital.org", "e-mail"),
    ("/regions/0/name", "1.2.840.113619.2.55.3.604688119", "UID"),
    ("/regions/1/name", "MRN 12345678", "identifier"),
])
def test_identifier_values_rejected(ptr, value, what):
    f = glioma_case()
    if ptr == "/warnings/0":
        f["warnings"] = [value]
    else:
        *parent, key = ptr.strip("/").split("/")
        resolve(f, "/" + "/".join(parent))[key] = value
    with pytest.raises(BrainXAIError) as exc:
        validate(f)
    msg = str(exc.value)
    assert ptr in msg and what in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["Registration and/or segmentation quality is limited.",
                                  "Step too small (0.000976562 < 0.001) after 34 iterations.",
                                  "Template MNI152NLin2009cAsym, version 1.2.0.",
                                  "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)"])
def test_guard_accepts_ordinary_text(text):
    f = glioma_case()
    f["warnings"] = [text]
    assert_deidentified(f)
    validate(f)


@pytest.mark.parametrize("ptr, value", [
    ("/input/format", "scan.nii"), ("/input/kind", "series"), ("/input/shape", [240, 240]),
    ("/model/sha256", SHA.upper()), ("/model/sha256", SHA[:40]), ("/diagnosis/label", "lymphoma"),
    ("/lesion/hemisphere", "Right"), ("/lesion/centroid_mni", [1, 2]), ("/lesion/volume_ml", -1),
    ("/explanations/0/method", "Grad CAM"), ("/explanations/0/dice_vs_segmentation", 1.2),
    ("/atlas/probability_threshold_percent", 250), ("/registration/iterations", 1.5),
])
def test_bad_values_rejected(ptr, value):
    f = glioma_case()
    *parent, key = ptr.strip("/").split("/")
    resolve(f, "/" + "/".join(parent))[key] = value
    with pytest.raises(BrainXAIError, match=ptr.replace("+", r"\+")):
        validate(f)


def test_future_cam_method_names_allowed():
    f = glioma_case()
    f["explanations"][0]["method"] = "eigencam"
    validate(f)


def test_write_read_roundtrip(tmp_path):
    f = phantom_case()
    path = write_findings(f, tmp_path / "out" / "findings.json")
    assert read_findings(path) == f
    text = path.read_text(encoding="utf-8")
    assert text.startswith("{\n  ") and text.endswith("}\n")


def test_write_refuses_invalid_and_writes_nothing(tmp_path):
    f = glioma_case()
    f["patient_name"] = "DOE^JOHN"
    target = tmp_path / "findings.json"
    with pytest.raises(BrainXAIError):
        write_findings(f, target)
    assert not target.exists()


def test_read_reports_bad_files(tmp_path):
    with pytest.raises(BrainXAIError, match="not found"):
        read_findings(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(BrainXAIError, match="not valid JSON"):
        read_findings(bad)
    tampered = tmp_path / "tampered.json"
    f = glioma_case()
    f["lesion"]["volume_ml"] = -3
    tampered.write_text(json.dumps(f), encoding="utf-8")
    with pytest.raises(BrainXAIError, match="/lesion/volume_ml"):
        read_findings(tampered)


def test_load_schema_returns_independent_copy():
    load_schema()["properties"].clear()
    validate(glioma_case())
    assert "lesion" in load_schema()["properties"]


def test_validate_does_not_mutate_input():
    f = glioma_case()
    before = copy.deepcopy(f)
    validate(f)
    assert f == before
