"""The offline report: every statement must be traceable to, and numerically consistent with, the findings."""

import re
from html.parser import HTMLParser

import pytest

from brainxai.errors import BrainXAIError
from brainxai.reporting.findings import resolve
from brainxai.reporting.report import (DISCLAIMER, SECTIONS, Statement, build_report, render_html, render_markdown,
                                       write_report)
from helpers import ALL_CASES, glioma_case, no_tumor_case, phantom_case, slice_case

TUMOUR_WORDS = ("glioma", "meningioma", "pituitary")


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield value


def _rounded(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def untraced_numbers(statement: Statement, findings: dict) -> list[str]:
    """Digit groups in the text that no source explains, either as a rounded number or verbatim inside a string."""
    values = [v for ptr in statement.sources for v in _leaves(resolve(findings, ptr))]
    missing = []
    for token in re.findall(r"-?\d+(?:\.\d+)*", statement.text):
        numeric = re.fullmatch(r"-?\d+(?:\.(\d+))?", token)
        decimals = len(numeric.group(1) or "") if numeric else None
        ok = any(isinstance(v, str) and token in v for v in values) or (numeric is not None and any(
            isinstance(v, (int, float)) and _rounded(v, decimals) == token for v in values))
        if not ok:
            missing.append(token)
    return missing


@pytest.fixture(params=ALL_CASES, ids=lambda c: c.__name__)
def case(request):
    return request.param()


def test_sections_and_order(case):
    statements = build_report(case)
    sections = [s.section for s in statements]
    assert set(sections) == set(SECTIONS)
    assert sections == sorted(sections, key=SECTIONS.index)
    assert statements[-1].text == DISCLAIMER and statements[-1].section == "limitations"


def test_every_source_resolves(case):
    for s in build_report(case):
        assert s.sources or s.text == DISCLAIMER, f"unsourced statement: {s.text}"
        for ptr in s.sources:
            resolve(case, ptr)  # raises if the pointer does not exist


def test_every_number_is_traceable(case):
    for s in build_report(case):
        assert untraced_numbers(s, case) == [], s.text


def test_traceability_check_catches_tampering():
    f = glioma_case()
    s = next(s for s in build_report(f) if "favours" in s.text)
    assert untraced_numbers(s, f) == []
    assert untraced_numbers(Statement(s.text.replace("0.93", "0.95"), s.sources), f) == ["0.95"]
    assert untraced_numbers(Statement(s.text, [p for p in s.sources if not p.endswith("glioma")]), f) == ["0.93"]


def test_glioma_report_content():
    f = glioma_case()
    statements = build_report(f)
    text = {sec: " ".join(s.text for s in statements if s.section == sec) for sec in SECTIONS}
    assert "A lesion of 23.4 mL (segmentation head) is centred in the right hemisphere (MNI 32, -10, 18)." \
        in text["findings"]
    assert "The classifier favours glioma (probability 0.93; meningioma 0.04, pituitary tumour 0.02, no tumour 0.01)." \
        in text["findings"]
    for name, pl, pr in (("Right Cerebral White Matter", "58.2", "4.1"), ("Insular Cortex (right)", "21.7", "18.0"),
                         ("Right Putamen", "9.1", "22.4")):
        assert f"Involves the {name}: {pl}% of the lesion, {pr}% of the region." in text["findings"]
    for method, dice in (("Grad-CAM for", "0.71"), ("Grad-CAM++", "0.66"), ("Score-CAM", "0.58")):
        assert re.search(rf"{re.escape(method)}.*Dice agreement with the segmentation {dice}\.", text["explanation"])
    assert "converged after 187 iterations" in text["technique"]
    assert "largest share in the Right Cerebral White Matter (58.2% of the lesion)" in text["impression"]
    assert not re.search(r"\bleft\b", " ".join(text.values()), re.I)
    assert "indeterminate" not in " ".join(text.values())


def test_laterality_only_from_sources(case):
    for s in build_report(case):
        for side in re.findall(r"\b(left|right|bilateral|both hemispheres)\b", s.text, re.I):
            word = "bilateral" if side.lower() == "both hemispheres" else side.lower()
            assert any(isinstance(v, str) and word in v.lower()
                       for p in s.sources for v in _leaves(resolve(case, p))), s.text


def test_no_tumour_report():
    f = no_tumor_case()
    statements = build_report(f)
    findings_text = [s.text for s in statements if s.section == "findings"]
    impression = [s.text for s in statements if s.section == "impression"]
    assert any(t.startswith("No lesion identified by the segmentation head") for t in findings_text)
    assert any("No lesion identified" in t for t in impression)
    assert not any(w in t.lower() for t in impression for w in TUMOUR_WORDS)
    assert not any(re.search(rf"favours ({'|'.join(TUMOUR_WORDS)})", s.text) for s in statements)
    assert not any("hemisphere" in s.text or "MNI " in s.text for s in statements)
    assert any("agreement with the segmentation was not computed" in s.text for s in statements)


def test_low_confidence_is_indeterminate():
    f = glioma_case()
    f["diagnosis"]["probabilities"] = {"glioma": 0.48, "meningioma": 0.40, "pituitary": 0.07, "no_tumor": 0.05}
    statements = build_report(f)
    assert not any("favours" in s.text for s in statements)
    assert any("indeterminate" in s.text and "glioma 0.48" in s.text for s in statements if s.section == "findings")
    assert any(s.text.startswith("Indeterminate classification") for s in statements if s.section == "impression")


def test_discordant_cases_are_flagged():
    f = glioma_case()
    f["diagnosis"]["label"] = "no_tumor"
    f["diagnosis"]["probabilities"] = {"glioma": 0.1, "meningioma": 0.05, "pituitary": 0.05, "no_tumor": 0.8}
    assert any(s.text.startswith("Discordant") for s in build_report(f) if s.section == "impression")


def test_phantom_warnings_verbatim_and_banner():
    f = phantom_case()
    statements = build_report(f)
    limitations = [s for s in statements if s.section == "limitations"]
    for i, w in enumerate(f["warnings"]):
        assert any(s.text == w and s.sources == [f"/warnings/{i}"] for s in limitations)
    assert any("did not converge" in s.text for s in statements if s.section == "impression")
    md, page = render_markdown(statements, f), render_html(statements, f)
    assert "PHANTOM" in md.split("## Technique")[0]
    assert re.search(r'<div class="banner phantom"[^>]*>PHANTOM', page)
    ordinary = glioma_case()
    assert "PHANTOM" not in render_markdown(build_report(ordinary), ordinary)
    assert "PHANTOM" not in render_html(build_report(ordinary), ordinary)


def test_slice_without_registration():
    f = slice_case()
    text = " ".join(s.text for s in build_report(f))
    assert "PNG slice of 512 × 512 × 1 pixels" in text
    assert "atlas localisation is not available" in text and "Harvard-Oxford" not in text


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.statements, self.rows, self.titles, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "li" and "statement" in a.get("class", ""):
            self.statements.append([a.get("data-sources", ""), ""])
            self._in = "li"
        elif tag == "tr" and "data-sources" in a:
            self.rows.append(a["data-sources"])
        elif tag in ("title", "h1"):
            self._in = tag

    def handle_endtag(self, tag):
        self._in = None if tag in ("li", "title", "h1") else self._in

    def handle_data(self, data):
        if self._in == "li":
            self.statements[-1][1] += data
        elif self._in in ("title", "h1"):
            self.titles.append(data)


def test_html_statements_carry_resolvable_sources(case):
    statements = build_report(case)
    parser = _Collector()
    parser.feed(render_html(statements, case))
    assert parser.titles == ["BrainXAI report", "BrainXAI report"]
    assert [text for _, text in parser.statements] == [s.text for s in statements]
    for (attr, _), s in zip(parser.statements, statements):
        assert attr.split() == s.sources
        for ptr in attr.split():
            resolve(case, ptr)
    assert len(parser.rows) == len(case["regions"])


def test_html_and_markdown_escape_region_names():
    f = glioma_case()
    f["regions"][1]["name"] = '<script>alert("x")</script> & Co'
    statements = build_report(f)
    page, md = render_html(statements, f), render_markdown(statements, f)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; Co" in page
    assert "<script>" not in md
    assert "<link" not in page and " src=" not in page  # self-contained: no external resources


def test_markdown_layout():
    f = glioma_case()
    md = render_markdown(build_report(f), f)
    assert md.startswith("# BrainXAI report\n")
    impression = md.split("## Impression")[1].split("##")[0]
    assert re.findall(r"^(\d+)\. ", impression, re.M) == ["1", "2"]
    assert "| Right Putamen | right | 9.1 | 22.4 |" in md
    assert md.index("## Technique") < md.index("## Findings") < md.index("## Explanation") \
        < md.index("## Impression") < md.index("## Limitations")


def test_write_report(tmp_path):
    md_path, html_path = write_report(glioma_case(), tmp_path / "rep")
    assert (md_path.name, html_path.name) == ("report.md", "report.html")
    assert "favours glioma" in md_path.read_text(encoding="utf-8")
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_write_report_refuses_identifiers(tmp_path):
    f = glioma_case()
    f["warnings"] = ["Referred by DOE^JANE"]
    with pytest.raises(BrainXAIError, match="/warnings/0"):
        write_report(f, tmp_path)
    assert not (tmp_path / "report.md").exists()
