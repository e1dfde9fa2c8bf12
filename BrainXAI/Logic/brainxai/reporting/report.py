"""Offline, radiology-style report built only from the structured findings.

The report is a list of Statements, each naming the JSON pointers it was written from, so that a checker can
verify every claim. Two rules make that checkable:
  * every number printed is a findings value formatted by `fmt` with the precision in DECIMALS, never derived;
  * fixed wording contains no digits and no laterality, so any digit or side in a statement comes from its sources.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from brainxai import CLASSES, layout
from brainxai.explain import TITLES
from brainxai.reporting.findings import assert_deidentified

SECTIONS = ("technique", "findings", "explanation", "impression", "limitations")
DECIMALS = {"volume_ml": 1, "probability": 2, "percent": 1, "mni_mm": 0, "dice": 2, "spacing_mm": 2, "metric": 3}
LOW_CONFIDENCE = 0.6  # below this the top class is reported as indeterminate rather than favoured
DISCLAIMER = "BrainXAI is research software, not a medical device; this report is not for clinical use."
PHANTOM_BANNER = "PHANTOM: synthetic test input, not a patient scan."

CLASS_NAMES = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary tumour", "no_tumor": "no tumour"}
METHOD_NAMES = TITLES
_WHERE = {"left": "is centred in the left hemisphere", "right": "is centred in the right hemisphere",
          "bilateral": "extends across both hemispheres"}
_IMPRESSION_SIDE = {"left": "Left hemispheric lesion", "right": "Right hemispheric lesion",
                    "bilateral": "Bilateral lesion"}


@dataclass
class Statement:
    text: str
    sources: list[str] = field(default_factory=list)  # JSON pointers into the findings; empty only for fixed wording
    section: str = "findings"


def fmt(value: float, decimals: int) -> str:
    """The one number formatter of the report; '-0' is printed as '0' so signs never appear from rounding."""
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def _vol(v: float) -> str:
    return fmt(v, DECIMALS["volume_ml"])


def _prob(v: float) -> str:
    return fmt(v, DECIMALS["probability"])


def _pct(v: float) -> str:
    return fmt(v, DECIMALS["percent"])


def _technique(f: dict) -> list[Statement]:
    inp, model, reg = f["input"], f["model"], f["registration"]
    unit = "voxels" if inp["kind"] == "volume" else "pixels"
    shape = " × ".join(str(n) for n in inp["shape"])
    spacing = " × ".join(fmt(s, DECIMALS["spacing_mm"]) for s in inp["spacing_mm"])
    out = [
        Statement(f"{inp['format']} {inp['kind']} of {shape} {unit} at {spacing} mm.",
                  ["/input/format", "/input/kind", "/input/shape", "/input/spacing_mm"]),
        Statement(f"Classification by {model['name']} version {model['version']} (weights checksum "
                  f"{model['sha256'][:12]}); lesion mask from the {f['lesion']['source']}.",
                  ["/model/name", "/model/version", "/model/sha256", "/lesion/source"]),
    ]
    if reg is None:
        out.append(Statement("No registration to a standard template was performed; "
                             "atlas localisation is not available.", ["/registration"]))
        return out
    stop = reg["stop_condition"].rstrip(". ")
    result = "converged" if reg["converged"] else "did not converge"
    out.append(Statement(
        f"Registration to the {reg['template']} template {result} after {reg['iterations']} iterations "
        f"({reg['metric']} {fmt(reg['metric_value'], DECIMALS['metric'])}; stop condition: {stop}).",
        [f"/registration/{k}"
         for k in ("template", "converged", "iterations", "metric", "metric_value", "stop_condition")]))
    out.append(Statement(
        f"Anatomical labels from the {f['atlas']['name']} atlas at a "
        f"{_pct(f['atlas']['probability_threshold_percent'])}% probability threshold.",
        ["/atlas/name", "/atlas/probability_threshold_percent"]))
    return out


def _classification(f: dict) -> Statement:
    probs, label = f["diagnosis"]["probabilities"], f["diagnosis"]["label"]
    top = max(CLASSES, key=lambda c: probs[c])
    sources = ["/diagnosis/label"] + [f"/diagnosis/probabilities/{c}" for c in CLASSES]
    if probs[top] < LOW_CONFIDENCE:
        rest = ", ".join(f"{CLASS_NAMES[c]} {_prob(probs[c])}" for c in CLASSES if c != top)
        return Statement(f"The classification is indeterminate: highest probability {CLASS_NAMES[top]} "
                         f"{_prob(probs[top])} ({rest}).", sources)
    rest = ", ".join(f"{CLASS_NAMES[c]} {_prob(probs[c])}" for c in CLASSES if c != label)
    return Statement(f"The classifier favours {CLASS_NAMES[label]} (probability {_prob(probs[label])}; {rest}).",
                     sources)


def _region_name(r: dict) -> str:
    # Add the side only where the atlas name lacks it, so laterality is never stated twice or contradicted.
    side = r["hemisphere"]
    return f"{r['name']} ({side})" if side and side not in r["name"].lower() else r["name"]


def _findings(f: dict) -> list[Statement]:
    lesion, regions = f["lesion"], f["regions"]
    out = []
    if lesion["volume_ml"] > 0:
        text = f"A lesion of {_vol(lesion['volume_ml'])} mL ({lesion['source']}) "
        text += _WHERE.get(lesion["hemisphere"], "is present")
        sources = ["/lesion/volume_ml", "/lesion/source"] + (["/lesion/hemisphere"] if lesion["hemisphere"] else [])
        if lesion["centroid_mni"] is not None:
            text += " (MNI " + ", ".join(fmt(c, DECIMALS["mni_mm"]) for c in lesion["centroid_mni"]) + ")"
            sources.append("/lesion/centroid_mni")
        out.append(Statement(text + ".", sources))
        if lesion["peak_region"]:
            out.append(Statement(f"Peak atlas region: {lesion['peak_region']}.", ["/lesion/peak_region"]))
        for i, r in enumerate(regions):
            sources = [f"/regions/{i}/name", f"/regions/{i}/percent_of_lesion", f"/regions/{i}/percent_of_region"]
            if r["hemisphere"]:
                sources.append(f"/regions/{i}/hemisphere")
            out.append(Statement(f"Involves the {_region_name(r)}: {_pct(r['percent_of_lesion'])}% of the lesion, "
                                 f"{_pct(r['percent_of_region'])}% of the region.", sources))
        if not regions and f["registration"] is not None:
            out.append(Statement("No atlas regions are reported for the lesion.", ["/regions"]))
    else:
        out.append(Statement(f"No lesion identified by the {lesion['source']} (lesion volume "
                             f"{_vol(lesion['volume_ml'])} mL).", ["/lesion/source", "/lesion/volume_ml"]))
    out.append(_classification(f))
    d = f["diagnosis"]
    out.append(Statement(f"Slices with tumour evidence: {d['slices_with_tumor_evidence']} of {d['slices_total']}.",
                         ["/diagnosis/slices_with_tumor_evidence", "/diagnosis/slices_total"]))
    return out


def _explanation(f: dict) -> list[Statement]:
    if not f["explanations"]:
        return [Statement("No saliency maps were computed.", ["/explanations"])]
    out = []
    for i, e in enumerate(f["explanations"]):
        p = f"/explanations/{i}"
        cut = (f"cut where its mask probability is at least {e['threshold_level']:g}" if "threshold_level" in e
               else f"thresholded at percentile {_pct(e['threshold_percentile'])}")
        enhanced = " (map sharpened by percentile stretch and CLAHE)" if e.get("enhanced") else ""
        text = (f"{METHOD_NAMES.get(e['method'], e['method'])}{enhanced} for {CLASS_NAMES[e['target_class']]}, {cut} "
                f"over {e['slices_explained']} slices, marks {_vol(e['mask_volume_ml'])} mL")
        if e["dice_vs_segmentation"] is None:
            text += "; agreement with the segmentation was not computed."
        else:
            text += f"; Dice agreement with the segmentation {fmt(e['dice_vs_segmentation'], DECIMALS['dice'])}."
        keys = ("method", "target_class", "threshold_level" if "threshold_level" in e else "threshold_percentile",
                "slices_explained", "mask_volume_ml", "dice_vs_segmentation")
        out.append(Statement(text, [f"{p}/{k}" for k in keys]))
        if "counterfactual" in e:
            out.append(_counterfactual(f, e, p))
        if "minimal_evidence" in e:
            out.append(_minimal_evidence(f, e, p))
        if "faithfulness" in e:
            out.append(_faithfulness(e, p))
    return out


def _faithfulness(e: dict, p: str) -> Statement:
    s, title = e["faithfulness"], METHOD_NAMES.get(e["method"], e["method"])
    better = s["deletion_auc"] < s["random_deletion_auc"] and s["insertion_auc"] > s["random_insertion_auc"]
    verdict = ("more faithful than random maps on both" if better else
               "not more faithful than random maps on both (read this map with caution)")
    text = (f"Faithfulness of {title} on {s['slices']} explained slices: deletion AUC {_prob(s['deletion_auc'])} "
            f"(random maps {_prob(s['random_deletion_auc'])}; lower is better), insertion AUC "
            f"{_prob(s['insertion_auc'])} (random maps {_prob(s['random_insertion_auc'])}; higher is better): "
            f"{verdict}.")
    return Statement(text, [f"{p}/faithfulness"])


def _counterfactual(f: dict, e: dict, p: str) -> Statement:
    """What the model says with the method's region removed: the test of whether the map marks what the call needs."""
    cf, title = e["counterfactual"], METHOD_NAMES.get(e["method"], e["method"])
    label, was = f["diagnosis"]["label"], f["diagnosis"]["probabilities"][f["diagnosis"]["label"]]
    region = f"the {title} region"
    if cf["threshold_percentile"] != e["threshold_percentile"]:  # re-thresholded since: said, not recomputed
        region += (f" at the analysis threshold (percentile {_pct(cf['threshold_percentile'])}; not recomputed at "
                   f"{_pct(e['threshold_percentile'])})")
    text = f"Without {region}, inpainted from the surrounding tissue, the model "
    if cf["label"] == label:
        text += f"still predicts {CLASS_NAMES[label]} (p = {_prob(cf['probabilities'][label])}, from {_prob(was)})."
    else:
        text += (f"predicts {CLASS_NAMES[cf['label']]} (p = {_prob(cf['probabilities'][cf['label']])}); "
                 f"{CLASS_NAMES[label]} p = {_prob(cf['probabilities'][label])}, from {_prob(was)}.")
    return Statement(text, [f"{p}/counterfactual", f"{p}/threshold_percentile", f"/diagnosis/probabilities/{label}"])


def _minimal_evidence(f: dict, e: dict, p: str) -> Statement:
    """What the model says from the method's region alone: whether the marked evidence suffices for the call."""
    me, title = e["minimal_evidence"], METHOD_NAMES.get(e["method"], e["method"])
    label = f["diagnosis"]["label"]
    region = f"the {title} region alone"
    if "threshold_level" not in e:  # re-thresholded by percentile since: said, not recomputed
        region += (f", as cut at the analysis level (mask probability {me['level']:g}, not recomputed at percentile "
                   f"{_pct(e['threshold_percentile'])}),")
    text = (f"From {region} ({_pct(me['area_percent_of_brain'])}% of the brain on the explained "
            "slices; the rest blurred away), the model ")
    if me["label"] == label:
        text += f"keeps {CLASS_NAMES[label]} (p = {_prob(me['probabilities'][label])})."
    else:
        text += (f"predicts {CLASS_NAMES[me['label']]} (p = {_prob(me['probabilities'][me['label']])}); the region does "
                 f"not suffice for {CLASS_NAMES[label]} (p = {_prob(me['probabilities'][label])}).")
    return Statement(text, [f"{p}/minimal_evidence", "/diagnosis/label"])


def _impression(f: dict) -> list[Statement]:
    lesion, d, reg = f["lesion"], f["diagnosis"], f["registration"]
    probs, label = d["probabilities"], d["label"]
    top = max(CLASSES, key=lambda c: probs[c])
    present = lesion["volume_ml"] > 0
    out = []
    if f["input"]["phantom"]:
        out.append(Statement("Synthetic phantom input; the findings do not describe a patient.", ["/input/phantom"]))
    if present:
        text = f"{_IMPRESSION_SIDE.get(lesion['hemisphere'], 'Lesion')} of {_vol(lesion['volume_ml'])} mL"
        sources = ["/lesion/volume_ml"] + (["/lesion/hemisphere"] if lesion["hemisphere"] else [])
        if f["regions"]:
            i, r = max(enumerate(f["regions"]), key=lambda ir: ir[1]["percent_of_lesion"])
            text += f", largest share in the {_region_name(r)} ({_pct(r['percent_of_lesion'])}% of the lesion)"
            sources += [f"/regions/{i}/name", f"/regions/{i}/percent_of_lesion"]
            if r["hemisphere"]:
                sources.append(f"/regions/{i}/hemisphere")
        out.append(Statement(text + ".", sources))
    cls_sources = ["/diagnosis/label", f"/diagnosis/probabilities/{label}"]
    if probs[top] < LOW_CONFIDENCE:
        text = f"indeterminate classification (highest probability {CLASS_NAMES[top]} {_prob(probs[top])})."
        sources = [f"/diagnosis/probabilities/{top}"]
        if present:
            text = text[0].upper() + text[1:]
        else:
            text, sources = "No lesion identified; " + text, sources + ["/lesion/volume_ml"]
        out.append(Statement(text, sources))
    elif present and label == "no_tumor":
        out.append(Statement(f"Discordant: the classifier favours no tumour ({_prob(probs[label])}) although a "
                             "lesion is segmented.", cls_sources + ["/lesion/volume_ml"]))
    elif present:
        out.append(Statement(f"The classifier favours {CLASS_NAMES[label]} ({_prob(probs[label])}).", cls_sources))
    elif label == "no_tumor":
        out.append(Statement(f"No lesion identified; the classifier favours no tumour ({_prob(probs[label])}).",
                             cls_sources + ["/lesion/volume_ml"]))
    else:
        out.append(Statement(f"Discordant: no lesion is segmented, but the classifier favours {CLASS_NAMES[label]} "
                             f"({_prob(probs[label])}).", cls_sources + ["/lesion/volume_ml"]))
    if reg is not None and not reg["converged"]:
        out.append(Statement("Atlas localisation is unreliable because registration did not converge.",
                             ["/registration/converged"]))
    return out


def _limitations(f: dict) -> list[Statement]:
    out = [Statement(w, [f"/warnings/{i}"]) for i, w in enumerate(f["warnings"])]
    sw = f["software"]
    out.append(Statement(f"Report generated offline by {sw['name']} {sw['version']} from the structured findings.",
                         ["/software/name", "/software/version"]))
    out.append(Statement(DISCLAIMER, []))
    return out


def build_report(findings: dict) -> list[Statement]:
    """All report statements, in section order; the findings are assumed valid (see findings.validate)."""
    builders = {"technique": _technique, "findings": _findings, "explanation": _explanation,
                "impression": _impression, "limitations": _limitations}
    statements = []
    for section in SECTIONS:
        for s in builders[section](findings):
            s.section = section
            statements.append(s)
    return statements


def _by_section(statements: list[Statement]) -> dict[str, list[Statement]]:
    grouped: dict[str, list[Statement]] = {s: [] for s in SECTIONS}
    for s in statements:
        grouped.setdefault(s.section, []).append(s)
    return {k: v for k, v in grouped.items() if v}


def _md(text: str) -> str:
    # Region names and warnings are data: escape Markdown/HTML syntax so they render as plain text.
    return re.sub(r"([\\`*_\[\]<>|])", r"\\\1", text)


def _region_rows(findings: dict) -> list[tuple[str, str, str, str]]:
    return [(r["name"], r["hemisphere"] or "", _pct(r["percent_of_lesion"]), _pct(r["percent_of_region"]))
            for r in findings["regions"]]


def render_markdown(statements: list[Statement], findings: dict) -> str:
    lines = ["# BrainXAI report", ""]
    if findings["input"]["phantom"]:
        lines += [f"> **{PHANTOM_BANNER}**", ""]
    for section, items in _by_section(statements).items():
        lines += [f"## {section.capitalize()}", ""]
        numbered = section == "impression"
        lines += [f"{n}. {_md(s.text)}" if numbered else f"- {_md(s.text)}" for n, s in enumerate(items, 1)]
        lines.append("")
        if section == "findings" and findings["regions"]:
            lines += ["| Region | Hemisphere | % of lesion | % of region |", "|---|---|---:|---:|"]
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _region_rows(findings)]
            lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;border-bottom:2px solid #333;padding-bottom:.3rem}
h2{font-size:1.1rem;text-transform:uppercase;letter-spacing:.05em;color:#444;margin-top:1.6rem}
.banner{background:#b00020;color:#fff;font-weight:700;padding:.6rem 1rem;border-radius:4px;text-align:center}
table{border-collapse:collapse;margin:.8rem 0}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.statement:hover{background:#f3f6fb}
"""


def render_html(statements: list[Statement], findings: dict) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>BrainXAI report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             "<h1>BrainXAI report</h1>"]
    if findings["input"]["phantom"]:
        parts.append('<div class="banner phantom" role="alert" data-sources="/input/phantom">'
                     f"{esc(PHANTOM_BANNER)}</div>")
    for section, items in _by_section(statements).items():
        tag = "ol" if section == "impression" else "ul"
        parts.append(f'<section id="{esc(section)}"><h2>{esc(section.capitalize())}</h2><{tag}>')
        parts += [f'<li class="statement" data-section="{esc(s.section)}" data-sources="{esc(" ".join(s.sources))}">'
                  f"{esc(s.text)}</li>" for s in items]
        parts.append(f"</{tag}>")
        if section == "findings" and findings["regions"]:
            parts.append('<table class="regions"><thead><tr><th>Region</th><th>Hemisphere</th>'
                         "<th>% of lesion</th><th>% of region</th></tr></thead><tbody>")
            for i, (name, side, pl, pr) in enumerate(_region_rows(findings)):
                parts.append(f'<tr data-sources="/regions/{i}"><td>{esc(name)}</td><td>{esc(side)}</td>'
                             f'<td class="num">{pl}</td><td class="num">{pr}</td></tr>')
            parts.append("</tbody></table>")
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(findings: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.html into out_dir (no identifier reaches disk: see findings.write_findings)."""
    assert_deidentified(findings)
    statements = build_report(findings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / layout.REPORT_MD, out_dir / layout.REPORT_HTML
    md_path.write_text(render_markdown(statements, findings), encoding="utf-8")
    html_path.write_text(render_html(statements, findings), encoding="utf-8")
    return md_path, html_path
