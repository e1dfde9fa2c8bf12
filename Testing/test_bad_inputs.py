"""The bad-input corpus (Testing/bad_inputs.py, generated here from the bundled phantom: no data needed): every
input that must be refused gives exit status 2, one line on stderr, no traceback and no output folder; the others
are read, with a warning where something was repaired."""

from pathlib import Path

import pytest
import SimpleITK as sitk

from bad_inputs import make_corpus
from brainxai import cli
from brainxai.phantom import make_phantom
from brainxai.preflight import check_one


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    source = root / "phantom.nii.gz"
    sitk.WriteImage(make_phantom(), str(source))
    return make_corpus(root / "bad", source)


def test_the_corpus_has_at_least_25_kinds(corpus):
    assert len(corpus) >= 25 and len({r["name"] for r in corpus}) == len(corpus)


def test_every_kind_gets_what_it_should(corpus):
    """Pre-flight (the checks explain makes before the model, with registration): refused, warned or ok."""
    got = {r["name"]: check_one(Path(r["path"]), register=True) for r in corpus}
    wrong = {name: (r["expected"], got[name]["status"], got[name]["message"])
             for name, r in ((r["name"], r) for r in corpus) if got[name]["status"] != r["expected"]}
    assert wrong == {}, wrong
    warned = [got[r["name"]]["message"] for r in corpus if r["expected"] == "warned"]
    assert all(m.startswith("Input file:") for m in warned), warned


def test_explain_refuses_each_in_one_line_and_writes_nothing(corpus, tmp_path, capsys):
    for i, r in enumerate(c for c in corpus if c["expected"] == "refused"):
        out = tmp_path / f"out{i}"
        code = cli.main(["explain", r["path"], "--out", str(out), "--methods", "gradcam"])
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert code == 2, (r["name"], code, captured.err)
        assert len(lines) == 1 and lines[0].startswith("brainxai: error: "), (r["name"], captured.err)
        assert "Traceback" not in captured.err + captured.out, r["name"]
        assert not out.exists(), r["name"]
        assert not list(tmp_path.glob(f"*out{i}*")), r["name"]  # no temporary sibling left behind either


def test_check_command_lists_refusals_and_exits_1(corpus, capsys):
    folder = Path(corpus[0]["path"]).parent
    code = cli.main(["check", str(folder)])
    out = capsys.readouterr().out
    assert code == 1
    assert "refused: " in out and "truncated.nii.gz" in out
    summary = out.strip().splitlines()[-1]
    assert summary.endswith("refused") and " inputs: " in summary


def test_check_command_passes_a_good_scan(tmp_path, capsys):
    path = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(make_phantom(), str(path))
    assert cli.main(["check", str(path), "--register", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "1 inputs: 1 ok, 0 read with a warning, 0 refused (with the brain check after registration)"
