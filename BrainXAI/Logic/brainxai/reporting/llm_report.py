"""Report stage, LLM path: generate -> verify -> regenerate once -> else the built-in report, with a banner.

A report that makes a claim the findings do not support is never shown as it is. The model gets one more try, told
which claims failed; if that fails too, or the backend cannot be reached, the built-in writer's report (which always
passes the check) is shown under a banner that says why.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import requests

from . import report as builtin
from .. import layout
from ..errors import BrainXAIError
from .findings import validate
from .llm import Backend, build_messages, check_allowed, complete
from .verify import verify

MAX_ATTEMPTS = 2  # the first report and one regeneration


@dataclass
class ReportOutcome:
    markdown: str
    source: str  # "llm" or "builtin"
    banner: str | None
    backend: dict | None  # the backend's public settings (model, URL, temperature, seed), never its key
    attempts: list[dict] = field(default_factory=list)
    html: str = ""  # for Slicer's text browser

    def record(self) -> dict:
        """What is saved next to the report: how it was written and checked."""
        return {"source": self.source, "banner": self.banner, "backend": self.backend, "attempts": self.attempts}


def _feedback(unsupported: list[str]) -> str:
    return ("Your report contains claims the findings do not support:\n" + "\n".join(unsupported) +
            "\nRewrite the whole report using only the findings; leave out anything they do not state.")


def _footer(backend: Backend) -> str:
    seed = "none" if backend.seed is None else backend.seed
    return (f"\n\n---\nWritten by {backend.model} through the {backend.name} backend (temperature "
            f"{backend.temperature:g}, seed {seed}) from the structured findings; every claim was checked against "
            "them. Research software, not for clinical use.")


def builtin_markdown(findings: dict) -> str:
    """The offline writer's report: the fallback, and the reference the LLMs are compared with."""
    return builtin.render_markdown(builtin.build_report(findings), findings)


def _fallback(findings: dict, reason: str, backend: Backend, attempts: list[dict]) -> ReportOutcome:
    """The built-in report under a banner, in Markdown and in the built-in writer's own HTML (with its tables)."""
    banner = f"Built-in report shown instead of the language model's: {reason}"
    page = builtin.render_html(builtin.build_report(findings), findings)
    page = page.replace("<body>", f'<body>\n<p class="banner" style="background:#fff3cd;padding:4px"><b>'
                        f"{html.escape(banner)}</b></p>", 1)
    return ReportOutcome(f"> **{banner}**\n\n" + builtin_markdown(findings), "builtin", banner, backend.public(),
                         attempts, page)


def generate(findings: dict, backend: Backend | None, session: requests.Session | None = None) -> ReportOutcome:
    """The report for `findings`: from `backend` when its report passes the grounding check, else built in.
    backend None means the built-in writer."""
    validate(findings)
    if backend is None:
        return ReportOutcome(builtin_markdown(findings), "builtin", None, None,
                             html=builtin.render_html(builtin.build_report(findings), findings))
    check_allowed(backend)  # a privacy refusal is the user's to fix, not a failure to cover with a fallback
    attempts: list[dict] = []
    messages = build_messages(findings)
    reason = ""
    for _ in range(MAX_ATTEMPTS):
        try:
            completion = complete(backend, messages, session)
        except BrainXAIError as exc:
            attempts.append({"error": str(exc)})
            reason = f"the {backend.name} backend failed ({exc})"
            break
        check = verify(findings, completion.text)
        attempts.append({"seconds": completion.seconds, "http_attempts": completion.attempts,
                         "verification": check.summary(), "usage": completion.usage, "report": completion.text})
        if check.ok and check.states_diagnosis:
            text = completion.text + _footer(backend)
            return ReportOutcome(text, "llm", None, backend.public(), attempts, markdown_to_html(text))
        lines = [c.line() for c in check.unsupported]
        if not check.states_diagnosis:  # a refusal or an empty text makes no false claim, and says nothing
            lines.append(f"missing: the report does not state the classifier's result ({findings['diagnosis']['label']})")
        attempts[-1]["missing_diagnosis"] = not check.states_diagnosis
        kinds = sorted({c.kind.replace("_", " ") for c in check.unsupported} |
                       ({"no diagnosis stated"} if not check.states_diagnosis else set()))
        # The banner names the kinds only: the reader should not be shown the false claims themselves.
        reason = (f"its report still failed the check after {len(attempts)} attempt(s) ({', '.join(kinds)}; "
                  f"{len(lines)} problem(s))")
        messages = messages + [{"role": "assistant", "content": completion.text},
                               {"role": "user", "content": _feedback(lines)}]
    return _fallback(findings, reason, backend, attempts)


def markdown_to_html(markdown: str) -> str:
    """A small, safe rendering (headings, lists, quotes, paragraphs) for Slicer's text browser: everything is
    escaped, so a model cannot inject markup."""
    out, in_list = [], None
    for raw in markdown.splitlines():
        line = raw.rstrip()
        item = re.match(r"\s*(?:[-*+]|(\d+)[.)])\s+(.*)", line)
        kind = None if not item else ("ol" if item.group(1) else "ul")
        if in_list and kind != in_list:
            out.append(f"</{in_list}>")
            in_list = None
        text = html.escape(item.group(2) if item else line.lstrip("#> ").strip())
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        if item:
            if not in_list:
                out.append(f"<{kind}>")
                in_list = kind
            out.append(f"<li>{text}</li>")
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{text}</h{level}>")
        elif line.startswith(">"):
            out.append(f'<p class="banner" style="background:#fff3cd;padding:4px">{text}</p>')
        elif line.strip() == "---":
            out.append("<hr/>")
        elif line.strip():
            out.append(f"<p>{text}</p>")
    if in_list:
        out.append(f"</{in_list}>")
    return "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>BrainXAI report</title></head><body>\n" + \
        "\n".join(out) + "\n</body></html>\n"


def write(outcome: ReportOutcome, out_dir: str | Path, stem: str = layout.LLM_REPORT_STEM) -> tuple[Path, Path, Path]:
    """STEM.md, STEM.html and STEM.json (how it was written and checked) in out_dir; refuses to overwrite."""
    out = Path(out_dir)
    paths = (out / f"{stem}.md", out / f"{stem}.html", out / f"{stem}.json")
    existing = [p.name for p in paths if p.exists()]
    if existing:
        raise BrainXAIError(f"{out} already has {', '.join(existing)}: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(outcome.markdown + "\n", encoding="utf-8")
    paths[1].write_text(outcome.html, encoding="utf-8")
    paths[2].write_text(json.dumps(outcome.record(), indent=2) + "\n", encoding="utf-8")
    return paths
