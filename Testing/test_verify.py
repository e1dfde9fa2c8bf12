"""The grounding check: on hand-written reports it finds every flaw and flags no correct statement; the built-in
writer's reports always pass."""

import json
import random
from pathlib import Path

import pytest

import helpers
from brainxai.reporting.report import build_report, render_markdown
from brainxai.reporting.verify import verify
from helpers import ALL_CASES, glioma_case, random_findings

DATA = Path(__file__).parent / "data"
# Held-out corpus, measured: blind (before the verifier saw it) 35/38 flaws, 6 false alarms; after the general fixes
# it prompted, 38/38 and 2 (both true unsupported claims next to the annotated flaw). Floors below the measurement.
HELDOUT_MIN_HIT_RATE = 0.95
HELDOUT_MAX_FALSE_ALARMS = 2


def score(corpus: list[dict]) -> dict:
    """Flaws found (an unsupported claim overlapping the flaw's text) and false alarms (an unsupported claim
    overlapping no flaw), over a corpus of {case, report, flaws}."""
    found, missed, false_alarms = 0, [], []
    for r in corpus:
        result = verify(getattr(helpers, r["case"])(), r["report"])
        spans = []
        for flaw in r["flaws"]:
            start = r["report"].index(flaw["text"])
            spans.append((start, start + len(flaw["text"])))
        for (a, b), flaw in zip(spans, r["flaws"]):
            if any(c.start < b and a < c.start + len(c.text) for c in result.unsupported):
                found += 1
            else:
                missed.append(f"{r['id']}: {flaw['kind']} {flaw['text']!r}")
        false_alarms += [f"{r['id']}: {c.line()}" for c in result.unsupported
                         if not any(c.start < b and a < c.start + len(c.text) for a, b in spans)]
    return {"flaws": sum(len(r["flaws"]) for r in corpus), "found": found, "missed": missed,
            "false_alarms": false_alarms, "correct_reports": sum(not r["flaws"] for r in corpus)}


def test_corpus_every_flaw_found_and_no_false_alarm():
    corpus = json.loads((DATA / "report_corpus.json").read_text(encoding="utf-8"))
    assert sum(bool(r["flaws"]) for r in corpus) >= 30 and sum(not r["flaws"] for r in corpus) >= 10
    s = score(corpus)
    assert s["missed"] == [] and s["false_alarms"] == [], s


def test_heldout_corpus_written_after_the_verifier():
    """A second corpus, written blind to the verifier after it was developed on the first: the figures in the
    README are measured here; the floors below sit under them, to catch regressions."""
    path = DATA / "report_corpus_heldout.json"
    if not path.exists():
        pytest.skip("no held-out corpus")
    s = score(json.loads(path.read_text(encoding="utf-8")))
    assert s["found"] / s["flaws"] >= HELDOUT_MIN_HIT_RATE, s
    assert len(s["false_alarms"]) <= HELDOUT_MAX_FALSE_ALARMS, s


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.__name__)
def test_builtin_reports_always_pass(case):
    f = case()
    result = verify(f, render_markdown(build_report(f), f))
    assert result.ok, [c.line() for c in result.unsupported]
    assert len(result.claims) > 10  # it did read the report


@pytest.mark.parametrize("seed", range(40))
def test_builtin_reports_pass_on_random_findings(seed):
    f = random_findings(random.Random(seed))
    result = verify(f, render_markdown(build_report(f), f))
    assert result.ok, [c.line() for c in result.unsupported]


@pytest.mark.parametrize("text, flagged", [
    ("Findings favour meningioma over the other classes.", "meningioma"),
    ("Glioma versus meningioma; meningioma most likely.", "meningioma"),
    ("The lesion is not in the right hemisphere.", "right hemisphere"),
    ("The right hemisphere is spared.", "right hemisphere"),
    ("It involves both cerebral hemispheres.", "both cerebral hemispheres"),
    ("A grade IV glioma.", "grade IV"),
    ("A benign tumour.", "benign"),
    ("Registration to MNI space failed.", "failed"),
    ("Recommend neurosurgical resection.", "resection"),
    ("The lesion measures forty millilitres.", "forty millilitres"),
    ("The lesion measures 41 millilitres.", "41 millilitres"),
    ("Lesion volume: 41.", "41"),
    ("The classifier gives glioma a probability of fifty percent.", "fifty percent"),
    ("The scan is normal.", "scan is normal"),
])
def test_tricky_wrong_statements_are_caught(text, flagged):
    """Found in review: claims a report can make that an earlier version let pass (glioma case, right-sided)."""
    result = verify(glioma_case(), text)
    assert any(flagged.lower() in c.text.lower() for c in result.unsupported), [c.line() for c in result.claims]


@pytest.mark.parametrize("text", [
    "Glioma is favoured over meningioma (0.04).",
    "Meningioma is less likely.",
    "The lesion does not cross the midline.",
    "The lesion measures twenty-three millilitres (23430 mm3).",
    "The model estimates a ninety-three percent likelihood of glioma.",
])
def test_true_statements_in_other_words_pass(text):
    result = verify(glioma_case(), text)
    assert result.ok, [c.line() for c in result.unsupported]


@pytest.mark.parametrize("text, ok", [
    ("Review the scan if a lesion is suspected.", True),
    ("Whether a mass is present cannot be judged on this sequence.", True),
    ("There is a lesion.", False),
    ("If anything, a mass is present.", False),  # the condition ends at the comma
])
def test_a_condition_is_not_a_finding_in_a_tumour_free_scan(text, ok):
    """Found by the suite: a no_tumor report quoting the findings' own warning ('... review the scan if a lesion is
    suspected') was flagged as asserting a lesion."""
    result = verify(helpers.no_tumor_case(), text)
    assert result.ok == ok and all(c.kind == "tumour_type" for c in result.unsupported), [c.line() for c in
                                                                                           result.claims]


def test_a_report_that_says_nothing_does_not_state_the_diagnosis():
    assert not verify(glioma_case(), "I'm sorry, I can't provide a medical report.").states_diagnosis
    assert verify(glioma_case(), "Glioma favoured (0.93).").states_diagnosis


def test_whether_the_scan_is_contrast_enhanced_is_checked_against_the_input_check():
    from brainxai import guard
    from brainxai.mni.register import Registration

    import SimpleITK as sitk

    reg = Registration(sitk.AffineTransform(3), "mutual information", -0.3, True, 10, "step", "MNI152", 1.0)
    plain = {**glioma_case(), "schema_version": "1.1", "input_check": guard.check(reg, 0.2)}
    enhanced = {**plain, "input_check": guard.check(reg, 0.8)}
    said = "The scan does not look contrast-enhanced."
    assert verify(plain, said).ok and not verify(enhanced, said).ok
    assert verify(enhanced, "This is a contrast-enhanced scan.").ok and not verify(plain, "A contrast-enhanced scan.").ok
    assert not verify(glioma_case(), said).ok  # findings without an input check cannot support it either way
    # the guard's own sentence passes; enhancement of the lesion is still not measured
    assert verify(plain, guard.warnings(plain["input_check"])[0]).ok
    assert not verify(enhanced, "The lesion shows ring enhancement.").ok


def bilateral_case() -> dict:
    """A glioma crossing the midline: left and right regions, lesion.hemisphere 'bilateral'."""
    f = glioma_case()
    f["lesion"].update(hemisphere="bilateral", centroid_mni=[2.0, -10.2, 17.8])
    f["regions"] = [
        {"name": "Left Frontal Pole", "percent_of_lesion": 40.0, "percent_of_region": 5.0, "hemisphere": "left"},
        {"name": "Right Frontal Pole", "percent_of_lesion": 35.0, "percent_of_region": 4.0, "hemisphere": "right"},
        {"name": "Right Putamen", "percent_of_lesion": 9.05, "percent_of_region": 22.4, "hemisphere": "right"},
    ]
    f["lesion"]["peak_region"] = "Left Frontal Pole"
    return f


def right_with_a_left_region_case() -> dict:
    f = glioma_case()
    f["regions"].append({"name": "Left Putamen", "percent_of_lesion": 2.0, "percent_of_region": 3.0,
                         "hemisphere": "left"})
    return f


@pytest.mark.parametrize("case, text, flagged", [
    (bilateral_case, "The lesion is confined to the left hemisphere.", "left"),
    (bilateral_case, "A left frontal mass.", "left"),
    (bilateral_case, "Left-sided lesion of 23.4 mL.", "left-sided"),
    (bilateral_case, "The lesion lies in the right hemisphere.", "right hemisphere"),
    (bilateral_case, "A unilateral lesion.", "unilateral"),
    (bilateral_case, "The tumour is seen only in the left hemisphere.", "left"),
    (glioma_case, "A left temporal glioma.", "left"),
    (glioma_case, "The lesion is left-sided.", "left-sided"),
    (right_with_a_left_region_case, "The lesion is confined to the right hemisphere.", "right"),
    (right_with_a_left_region_case, "The lesion is exclusively within the right hemisphere.", "right"),
], ids=["confined", "left-frontal-mass", "left-sided", "lies-in", "unilateral", "only-in", "right-case-left-glioma",
        "right-case-left-sided", "confined-but-touches-left", "exclusively"])
def test_one_sided_claims_about_the_lesion_are_checked_against_its_hemisphere(case, text, flagged):
    result = verify(case(), text)
    assert any(flagged.lower() in c.text.lower() for c in result.unsupported), [c.line() for c in result.claims]


@pytest.mark.parametrize("case, text", [
    (bilateral_case, "The lesion crosses the midline from the left to the right frontal lobe."),
    (bilateral_case, "Bilateral frontal lesion involving the left frontal pole and the right frontal pole."),
    (bilateral_case, "The left frontal lobe is involved."),
    (bilateral_case, "It extends across both hemispheres."),
    (glioma_case, "A right-sided lesion confined to the right hemisphere."),
    (glioma_case, "A right insular mass."),
    (glioma_case, "A unilateral lesion."),
], ids=["crosses", "bilateral-frontal", "left-frontal-lobe", "both", "right-confined", "right-insular-mass",
        "unilateral-right"])
def test_true_side_claims_pass(case, text):
    result = verify(case(), text)
    assert result.ok, [c.line() for c in result.unsupported]


def test_builtin_report_of_a_bilateral_lesion_passes():
    f = bilateral_case()
    result = verify(f, render_markdown(build_report(f), f))
    assert result.ok, [c.line() for c in result.unsupported]
