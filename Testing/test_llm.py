"""LLM reports against a real HTTP server on 127.0.0.1 speaking both protocols: transport, retries, errors,
regeneration, built-in fallback, privacy."""

import json
import os
import subprocess
import sys

import pytest

from brainxai.reporting import llm_report
from brainxai.errors import BrainXAIError
from brainxai.reporting.findings import write_findings
from brainxai.reporting.llm import PRESETS, Backend, build_messages, complete, is_local, load_backend
from brainxai.reporting.verify import verify
from llm_server import LLMServer
from helpers import glioma_case, no_tumor_case

KEY = "sk-test-7f3a91c2e4b8d605"  # must never appear in any output


@pytest.fixture(scope="module")
def server():
    with LLMServer() as s:
        yield s


def backend(server, model, protocol="openai", **kw):
    base = server.url + ("/v1" if protocol == "openai" else "")
    return Backend("local", protocol, base, model, backoff_s=0.01, timeout_s=kw.pop("timeout_s", 10), **kw)


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize("case", [glioma_case, no_tumor_case], ids=lambda c: c.__name__)
def test_correct_report_is_shown_with_its_settings(server, protocol, case):
    f = case()
    outcome = llm_report.generate(f, backend(server, "correct", protocol))
    assert outcome.source == "llm" and outcome.banner is None and len(outcome.attempts) == 1
    assert verify(f, outcome.markdown).ok
    assert "temperature 0, seed 0" in outcome.markdown  # recorded in the report and in its record
    assert outcome.record()["backend"]["temperature"] == 0 and outcome.record()["backend"]["seed"] == 0
    sent = server.requests[-1]
    assert sent["path"] == ("/v1/chat/completions" if protocol == "openai" else "/api/chat")
    body = sent["body"]
    assert body["messages"][0]["role"] == "system" and "ONLY" in body["messages"][0]["content"]
    seed = body["seed"] if protocol == "openai" else body["options"]["seed"]
    assert seed == 0


@pytest.mark.parametrize("flaw", ["invent-region", "wrong-type", "wrong-side", "wrong-number"])
def test_a_lying_report_is_regenerated_once_then_replaced_by_the_builtin_one(server, flaw):
    f = glioma_case()
    outcome = llm_report.generate(f, backend(server, flaw))
    assert outcome.source == "builtin" and len(outcome.attempts) == 2
    assert outcome.banner.startswith("Built-in report shown instead of the language model's")
    assert all(not a["verification"]["passed"] for a in outcome.attempts)
    body = outcome.markdown.split("\n\n", 1)[1]  # below the banner: the built-in report, which always passes
    assert verify(f, body).ok
    assert "<table" in outcome.html and "Built-in report shown instead" in outcome.html  # the writer's own HTML
    retry = server.requests[-1]["body"]["messages"]
    assert retry[-2]["role"] == "assistant" and "do not support" in retry[-1]["content"]


def test_regeneration_that_fixes_the_report_is_shown(server):
    outcome = llm_report.generate(glioma_case(), backend(server, "fixes-on-retry"))
    assert outcome.source == "llm" and len(outcome.attempts) == 2 and "thalamus" not in outcome.markdown


def test_429_is_retried_with_backoff(server):
    c = complete(backend(server, "rate-limited"), build_messages(glioma_case()))
    assert c.attempts == 2


@pytest.mark.parametrize("model, message", [
    ("server-error", "HTTP 500 after 4 attempt"),
    ("malformed", "malformed JSON"),
    ("stall", "did not answer within 1 s"),
])
def test_failures_are_one_clear_line_and_fall_back(server, model, message, monkeypatch):
    monkeypatch.setenv("BRAINXAI_LLM_API_KEY", KEY)
    b = backend(server, model, timeout_s=1)
    with pytest.raises(BrainXAIError, match=message) as info:
        complete(b, build_messages(glioma_case()))
    assert "\n" not in str(info.value) and KEY not in str(info.value)
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"  # it was sent, and not echoed
    outcome = llm_report.generate(glioma_case(), b)
    assert outcome.source == "builtin" and message.split()[0] in outcome.banner
    assert KEY not in json.dumps(outcome.record()) and KEY not in outcome.markdown


def test_unreachable_server_is_named():
    b = Backend("local", "openai", "http://127.0.0.1:9/v1", "m", timeout_s=2)
    with pytest.raises(BrainXAIError, match="cannot reach LLM backend 'local' at http://127.0.0.1:9/v1"):
        complete(b, build_messages(glioma_case()))


def test_cloud_endpoints_need_an_explicit_opt_in_and_a_key(monkeypatch):
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    monkeypatch.delenv("BRAINXAI_LLM_API_KEY", raising=False)
    grok = load_backend("grok", config=None)
    assert not is_local(grok.base_url) and is_local("http://localhost:11434") and is_local("http://[::1]:8/v1")
    with pytest.raises(BrainXAIError, match="off this machine: opt in with --allow-cloud"):
        complete(grok, build_messages(glioma_case()))
    with pytest.raises(BrainXAIError, match="set XAI_API_KEY"):
        complete(load_backend("grok", allow_cloud=True), build_messages(glioma_case()))
    for name in ("llama", "ollama", "vllm", "llamacpp"):  # local presets need neither
        assert is_local(PRESETS[name].base_url)


def test_only_deidentified_findings_leave_the_process(server):
    f = glioma_case()
    llm_report.generate(f, backend(server, "correct"))
    sent = json.dumps(server.requests[-1]["body"])
    assert f["model"]["sha256"] not in sent and "NIfTI" not in sent  # checksums and file formats stay home
    bad = glioma_case()
    bad["warnings"] = ["Scan of /home/jdoe/scans/patient.nii.gz"]
    n = len(server.requests)
    with pytest.raises(BrainXAIError, match="de-identified"):
        llm_report.generate(bad, backend(server, "correct"))
    assert len(server.requests) == n  # nothing was sent


def test_config_file_and_environment(tmp_path, monkeypatch, server):
    config = tmp_path / "llm.toml"
    config.write_text(f'[backends.lab]\nprotocol = "ollama"\nbase_url = "{server.url}"\nmodel = "correct"\n'
                      'temperature = 0.2\nseed = 7\n[backends.grok]\nmodel = "grok-3-mini"\n', encoding="utf-8")
    lab = load_backend("lab", config)
    assert (lab.protocol, lab.model, lab.temperature, lab.seed) == ("ollama", "correct", 0.2, 7)
    assert load_backend("grok", config).model == "grok-3-mini"
    monkeypatch.setenv("BRAINXAI_LLM_MODEL", "other")
    assert load_backend("lab", config).model == "other"
    config.write_text('[backends.lab]\napi_key = "secret"\n', encoding="utf-8")
    with pytest.raises(BrainXAIError, match="do not store API keys in files"):
        load_backend("lab", config)
    with pytest.raises(BrainXAIError, match="unknown LLM backend 'nope'"):
        load_backend("nope", config)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "brainxai", *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_report_and_verify(server, tmp_path):
    f = glioma_case()
    path = write_findings(f, tmp_path / "findings.json")
    config = tmp_path / "llm.toml"
    config.write_text(f'[backends.lab]\nbase_url = "{server.url}/v1"\nmodel = "correct"\n', encoding="utf-8")
    run = _cli("report", path, "--llm", "lab", "--llm-config", config, "--out", tmp_path / "r",
               env={"BRAINXAI_LLM_API_KEY": KEY})
    assert run.returncode == 0, run.stderr
    for name in ("report_llm.md", "report_llm.html", "report_llm.json"):
        assert KEY not in (tmp_path / "r" / name).read_text(encoding="utf-8")
    assert KEY not in run.stdout + run.stderr
    ok = _cli("verify", path, tmp_path / "r" / "report_llm.md")
    assert ok.returncode == 0 and ok.stdout == ""
    bad = tmp_path / "bad.md"
    bad.write_text("A 33.4 mL lesion in the left hemisphere involves the thalamus. Meningioma favoured.\n", encoding="utf-8")
    fail = _cli("verify", path, bad)
    assert fail.returncode == 1
    lines = fail.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("unsupported ") for line in lines), lines
    assert {"number", "laterality", "region", "tumour_type"} == {line.split()[1].rstrip(":") for line in lines}
    cloud = _cli("report", path, "--llm", "grok", "--out", tmp_path / "g")
    assert cloud.returncode == 2 and "--allow-cloud" in cloud.stderr and len(cloud.stderr.splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_compare_llms_table(server, tmp_path):
    """The paper's comparison over two findings files: scripted local stand-ins for LLMs (one faithful, one that
    puts the lesion on the wrong side) next to the built-in writer."""
    paths = [write_findings(glioma_case(), tmp_path / "a.json"), write_findings(no_tumor_case(), tmp_path / "b.json")]
    config = tmp_path / "llm.toml"
    config.write_text(f'[backends.faithful]\nbase_url = "{server.url}/v1"\nmodel = "correct"\n'
                      f'[backends.sloppy]\nprotocol = "ollama"\nbase_url = "{server.url}"\nmodel = "wrong-side"\n', encoding="utf-8")
    out = tmp_path / "cmp.md"
    run = _cli("compare-llms", *paths, "--backends", "builtin,faithful,sloppy", "--llm-config", config, "--out", out)
    assert run.returncode == 0, run.stderr
    rows = {r["backend"]: r for r in json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["rows"]}
    assert rows["builtin"]["rouge_l"] == 1.0 and rows["builtin"]["grounded_first"] == "2/2"
    assert rows["faithful"]["grounded_first"] == "2/2" and rows["faithful"]["shown_llm"] == "2/2"
    # the tumour-free case has no side to get wrong: one of two first reports fails, and is not shown
    assert rows["sloppy"]["grounded_first"] == "1/2" and rows["sloppy"]["shown_llm"] == "1/2"
    assert rows["sloppy"]["unsupported_per_report"] > 0
    for r in rows.values():
        assert all(r[m] is not None for m in ("flesch_reading_ease", "ttr", "mtld", "coherence", "bleu"))
    assert rows["faithful"]["rouge_l"] < 1.0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2 + 1 + 3


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_retries_5xx_then_success_and_honours_retry_after(server, protocol):
    import time

    assert complete(backend(server, "flaky-500", protocol), build_messages(glioma_case())).attempts == 2
    t0 = time.monotonic()
    c = complete(backend(server, "retry-after-1", protocol), build_messages(glioma_case()))
    assert c.attempts == 2 and time.monotonic() - t0 >= 0.9  # waited as told, not the 0.01 s backoff


def test_retries_run_out_and_client_errors_are_not_retried(server):
    key = ("always-429", "/v1/chat/completions")
    before = server.calls.get(key, 0)
    with pytest.raises(BrainXAIError, match="HTTP 429 after 3 attempt"):
        complete(backend(server, "always-429", max_retries=2), build_messages(glioma_case()))
    assert server.calls[key] - before == 3
    with pytest.raises(BrainXAIError, match="HTTP 400 after 1 attempt"):
        complete(backend(server, "bad-request"), build_messages(glioma_case()))


def test_redirects_are_not_followed(server):
    """A 'local' server must not be able to send the findings (and the key) elsewhere."""
    with pytest.raises(BrainXAIError, match="redirect .*not followed"):
        complete(backend(server, "redirect"), build_messages(glioma_case()))


def test_a_refusal_is_not_shown_as_a_verified_report(server):
    outcome = llm_report.generate(glioma_case(), backend(server, "refusal"))
    assert outcome.source == "builtin" and "no diagnosis stated" in outcome.banner
    assert all(a["missing_diagnosis"] for a in outcome.attempts)


@pytest.mark.parametrize("url", ["http://evil.example\\@localhost/v1", "http://127.0.0.1@evil.example/v1",
                                 "http://evil.localhost/v1", "http://localhost.evil.example/v1",
                                 "https://api.x.ai/v1", "http://10.0.0.5:8000/v1"])
def test_only_this_machine_counts_as_local(url):
    assert not is_local(url)
    with pytest.raises(BrainXAIError, match="off this machine"):
        complete(Backend("b", "openai", url, "m"), build_messages(glioma_case()))


def test_local_requests_ignore_proxy_settings(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy would see the findings; this one is dead
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert complete(backend(server, "correct"), build_messages(glioma_case())).attempts == 1


def test_keys_never_leak(server, monkeypatch):
    monkeypatch.setenv("BRAINXAI_LLM_API_KEY", KEY + "\n")  # requests would quote the header value in its error
    with pytest.raises(BrainXAIError) as info:
        complete(backend(server, "correct"), build_messages(glioma_case()))
    assert KEY not in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("BRAINXAI_LLM_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_API_KEY", "mistral-own-key")
    from brainxai.reporting.llm import _api_key

    assert _api_key(load_backend("mistral")) == "mistral-own-key"  # never the generic key to a provider
    b = Backend("b", "openai", f"http://user:{KEY}@127.0.0.1:1/v1?key={KEY}", "m")
    assert KEY not in json.dumps(b.public())
    from brainxai.reporting.llm import _redact  # a key straddling the 200-character cut

    assert "sk-" not in _redact("Bearer " + "x" * 195 + KEY, "x" * 195 + KEY)


def test_the_panel_no_to_cloud_wins_over_config_and_environment(tmp_path, monkeypatch):
    from brainxai.app.process import BackgroundExplain

    config = tmp_path / "llm.toml"
    config.write_text("[backends.grok]\nallow_cloud = true\n", encoding="utf-8")
    monkeypatch.setenv("BRAINXAI_LLM_ALLOW_CLOUD", "1")
    assert load_backend("grok", config).allow_cloud  # what the config and the inherited variable say
    job = BackgroundExplain(None, tmp_path / "o", llm="grok", allow_cloud=False)
    assert job.env["BRAINXAI_LLM_ALLOW_CLOUD"] == "0" and "--allow-cloud" not in job.command
    monkeypatch.setenv("BRAINXAI_LLM_ALLOW_CLOUD", job.env["BRAINXAI_LLM_ALLOW_CLOUD"])  # the child's environment
    assert not load_backend("grok", config).allow_cloud


def test_explain_refuses_a_cloud_backend_before_the_analysis(tmp_path):
    import time

    t0 = time.monotonic()
    run = _cli("explain", "--demo", "--out", tmp_path / "o", "--llm", "grok")
    assert run.returncode == 2 and "--allow-cloud" in run.stderr and not (tmp_path / "o").exists()
    assert time.monotonic() - t0 < 30  # said at once, not after the pipeline
