"""Property-based tests (Hypothesis; issue 18, outcome 5): the built-in report of any valid findings passes the
grounding check and one changed number, side, class or region fails it; generated findings satisfy the schema and a
wrong type does not; any grid (flipped, permuted, oblique) comes back voxel for voxel from the model's view."""

import copy
import re

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from brainxai import CLASSES, pipeline, preprocess
from brainxai.mni import atlas
from brainxai.mni.atlas import display_name
from brainxai.errors import BrainXAIError
from brainxai.reporting.findings import validate
from brainxai.reporting.report import build_report, render_markdown
from brainxai.reporting.verify import verify
from helpers import glioma_case

REGIONS = sorted({display_name(r["Name"]) for r in atlas.terminology_rows().values()})
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def findings(draw) -> dict:
    f = copy.deepcopy(glioma_case())
    label = draw(st.sampled_from(CLASSES[:3]))
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=len(CLASSES), max_size=len(CLASSES)))
    weights[CLASSES.index(label)] += 2
    probs = {c: round(w / sum(weights), 4) for c, w in zip(CLASSES, weights)}
    probs[label] = round(1 - sum(v for c, v in probs.items() if c != label), 4)
    f["diagnosis"].update(label=label, probabilities=probs)
    names = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=5, unique=True))
    f["regions"] = [{"name": n, "percent_of_lesion": draw(st.floats(0.1, 90).map(lambda v: round(v, 2))),
                     "percent_of_region": draw(st.floats(0.1, 60).map(lambda v: round(v, 2))),
                     "hemisphere": "left" if n.startswith("Left") else "right" if n.startswith("Right") else None}
                    for n in names]
    f["lesion"].update(volume_ml=draw(st.floats(0.2, 120).map(lambda v: round(v, 2))), peak_region=names[0],
                       hemisphere=draw(st.sampled_from(["left", "right", "bilateral"])),
                       centroid_mni=[draw(st.floats(-70, 70).map(lambda v: round(v, 1))) for _ in range(3)])
    for e in f["explanations"]:
        e.update(target_class=label, mask_volume_ml=draw(st.floats(0.5, 80).map(lambda v: round(v, 2))),
                 dice_vs_segmentation=draw(st.floats(0, 1).map(lambda v: round(v, 3))),
                 threshold_percentile=draw(st.sampled_from([85.0, 90.0, 95.0])))
    return f


def report_of(f: dict) -> str:
    return render_markdown(build_report(f), f)


@SETTINGS
@given(findings())
def test_any_valid_findings_validate_and_their_report_passes(f):
    validate(f)
    result = verify(f, report_of(f))
    assert result.ok and result.states_diagnosis, [c.line() for c in result.unsupported]


def _flagged(f: dict, text: str) -> bool:
    return not verify(f, text).ok


@SETTINGS
@given(findings(), st.floats(1.0, 50.0))
def test_one_changed_lesion_volume_fails(f, delta):
    text = report_of(f)
    m = re.search(r"A lesion of ([\d.]+) mL", text)
    assert m, text[:600]
    wrong = f"{float(m.group(1)) + delta:.1f}"
    assert _flagged(f, text[:m.start(1)] + wrong + text[m.end(1):])


@SETTINGS
@given(findings())
def test_one_changed_side_fails(f):
    text = report_of(f)
    m = re.search(r"centred in the (left|right) hemisphere", text)
    assume(m is not None)  # a bilateral lesion is described otherwise
    other = "right" if m.group(1) == "left" else "left"
    assert _flagged(f, text[:m.start(1)] + other + text[m.end(1):])


@SETTINGS
@given(findings(), st.data())
def test_one_changed_class_fails(f, data):
    text = report_of(f)
    m = re.search(r"(?:The classifier favours|indeterminate: highest probability) (glioma|meningioma|pituitary tumour)"
                  r" \(?(?:probability )?[\d.]", text)
    assert m, text[:800]
    names = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary tumour"}
    other = data.draw(st.sampled_from([v for k, v in names.items() if k != f["diagnosis"]["label"]]))
    assert _flagged(f, text[:m.start(1)] + other + text[m.end(1):])


@SETTINGS
@given(findings(), st.data())
def test_one_changed_region_fails(f, data):
    text = report_of(f)
    m = re.search(r"Peak atlas region: (.+)\.\n", text)
    assert m, text[:800]
    listed = {r["name"] for r in f["regions"]}
    # a region whose words are not part of any listed region's name (else the claim may still be true)
    other = data.draw(st.sampled_from([r for r in REGIONS if r not in listed
                                       and not any(r.lower() in n.lower() or n.lower() in r.lower() for n in listed)]))
    assert _flagged(f, text[:m.start(1)] + other + text[m.end(1):])


@SETTINGS
@given(findings(), st.sampled_from([("lesion", "volume_ml", "23 mL"), ("diagnosis", "label", "astrocytoma"),
                                    ("lesion", "hemisphere", "up"), ("input", "shape", [1, 2])]))
def test_a_wrong_type_or_value_breaks_the_schema(f, change):
    section, key, value = change
    f[section][key] = value
    with pytest.raises(BrainXAIError):
        validate(f)


def _direction(draw) -> np.ndarray:
    perm = draw(st.permutations([0, 1, 2]))
    signs = [draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)]
    d = np.zeros((3, 3))
    for row, (col, sign) in enumerate(zip(perm, signs)):
        d[row, col] = sign
    if draw(st.booleans()):  # oblique: a rotation of up to 35 degrees about a random axis
        axis = np.array([draw(st.floats(-1, 1)) for _ in range(3)])
        assume(np.linalg.norm(axis) > 0.1)
        angle = np.radians(draw(st.floats(-35, 35)))
        k = np.cross(np.eye(3), axis / np.linalg.norm(axis))
        d = (np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k) @ d
    return d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_grid_comes_back_voxel_for_voxel_from_the_model_view(data):
    """Through the pipeline's own path (orient, frame, resize to the model, back, restore): the output has the input's
    grid exactly, and a marked blob stays where it was in physical space."""
    size = [data.draw(st.integers(36, 56)) for _ in range(3)]
    spacing = [data.draw(st.floats(0.6, 3.0)) for _ in range(3)]
    origin = [data.draw(st.floats(-200, 200)) for _ in range(3)]
    kji = np.indices(size[::-1]).astype(np.float32)
    centre = np.array(size[::-1]) / 2
    head = (((kji - centre[:, None, None, None]) / (0.4 * np.array(size[::-1]))[:, None, None, None]) ** 2).sum(0) < 1
    at = [data.draw(st.integers(int(0.35 * s), int(0.65 * s))) for s in size[::-1]]
    blob = np.zeros(size[::-1], bool)
    blob[at[0] - 2:at[0] + 3, at[1] - 2:at[1] + 3, at[2] - 2:at[2] + 3] = True
    image = sitk.GetImageFromArray((head * 500 + blob * 800).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(_direction(data.draw).ravel().tolist())

    oriented, arr, fg = preprocess.oriented_volume(image)
    frame, _ = preprocess.frame_slices(preprocess.scale_intensity(arr), fg, 128)
    marked = sitk.GetArrayFromImage(preprocess.orient_for_model(_like(blob, image)))
    there = preprocess.to_model(marked.astype(np.float32), frame)
    back = (preprocess.from_model(there, frame) > 0.5).astype(np.uint8)
    out = preprocess.restore_orientation(pipeline._image_like(back, oriented, sitk.sitkUInt8), image)
    assert out.GetSize() == image.GetSize() and out.GetOrigin() == image.GetOrigin()
    assert out.GetSpacing() == image.GetSpacing() and out.GetDirection() == image.GetDirection()
    got = sitk.GetArrayFromImage(out).astype(bool)
    assert got.sum() > 0

    def centroid(mask):
        k, j, i = np.argwhere(mask).mean(0)
        return np.array(image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))

    tolerance = max(spacing) * 1.5  # one resize there and back: at most about a voxel
    assert np.linalg.norm(centroid(got) - centroid(blob)) < tolerance
    dice = 2 * (got & blob).sum() / (got.sum() + blob.sum())
    assert dice > 0.4, dice


def _like(mask: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out
