"""LLM backends for the report stage, over plain HTTP with requests.

Two protocols cover the paper's models and the usual local servers: OpenAI-compatible chat completions (xAI for
Grok, Mistral's API, vLLM, llama.cpp's server, Ollama's /v1) and Ollama's native /api/chat. A backend is a preset
overridden by a TOML config file and then by environment variables. Privacy rules live here, at the only place
that sends anything out: the payload is the de-identified findings alone, an endpoint off this machine is used only
after an explicit opt-in, and the API key is read from the environment and never written, logged or echoed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import requests

from .. import CLASSES
from ..errors import BrainXAIError
from .findings import assert_deidentified
from .report import CLASS_NAMES

PROTOCOLS = ("openai", "ollama")
CONFIG_ENV = "BRAINXAI_LLM_CONFIG"  # path of the TOML config file; default: ~/.config/brainxai/llm.toml
ENV_PREFIX = "BRAINXAI_LLM_"  # BRAINXAI_LLM_BASE_URL, _MODEL, _PROTOCOL, _TIMEOUT_S, _ALLOW_CLOUD, _API_KEY
RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Backend:
    name: str
    protocol: str  # "openai" (chat completions) or "ollama" (native /api/chat)
    base_url: str
    model: str
    api_key_env: str | None = None  # the environment variable that holds the key; the key itself is never stored
    temperature: float = 0.0
    seed: int | None = 0
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0  # first retry delay, doubling; a longer Retry-After is honoured up to timeout_s
    allow_cloud: bool = False

    def public(self) -> dict:
        """What may be recorded next to a report: no key source, and the URL without user info or query."""
        d = asdict(self)
        d.pop("api_key_env")
        parts = urlparse(self.base_url)
        host = parts.netloc.rsplit("@", 1)[-1]  # user info (maybe a key) never recorded
        d["base_url"] = parts._replace(netloc=host, query="", fragment="").geturl()
        return d


PRESETS = {
    "grok": Backend("grok", "openai", "https://api.x.ai/v1", "grok-3", "XAI_API_KEY"),
    "mistral": Backend("mistral", "openai", "https://api.mistral.ai/v1", "mistral-large-latest", "MISTRAL_API_KEY"),
    "llama": Backend("llama", "ollama", "http://localhost:11434", "llama3.1"),  # Ollama's native API
    "ollama": Backend("ollama", "openai", "http://localhost:11434/v1", "llama3.1"),
    "vllm": Backend("vllm", "openai", "http://localhost:8000/v1", "meta-llama/Llama-3.1-8B-Instruct"),
    "llamacpp": Backend("llamacpp", "openai", "http://localhost:8080/v1", "llama"),
}


def _config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".config" / "brainxai" / "llm.toml")


def _coerce(key: str, value):
    kind = Backend.__dataclass_fields__[key].type
    try:
        if "bool" in kind:
            return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
        if "float" in kind:
            return float(value)
        if "int" in kind:
            return None if value in (None, "", "none") else int(value)
    except (TypeError, ValueError):
        raise BrainXAIError(f"LLM setting '{key}' = {value!r} is not a valid {kind}: fix the config or "
                            "environment variable") from None
    return str(value)


def load_backend(name: str, config: str | Path | None = None, **overrides) -> Backend:
    """Preset `name`, then [backends.NAME] of the TOML config file, then BRAINXAI_LLM_* variables, then overrides
    (e.g. allow_cloud=True from a command-line flag). A name that is not a preset must be defined in the config."""
    path = Path(config) if config else _config_path()
    table: dict = {}
    if path.is_file():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8")).get("backends", {}).get(name, {})
        except tomllib.TOMLDecodeError as exc:
            raise BrainXAIError(f"LLM config {path} is not valid TOML ({exc}): fix or remove it") from None
    elif config:
        raise BrainXAIError(f"LLM config {path} not found: give an existing TOML file")
    if "api_key" in table:
        raise BrainXAIError(f"LLM config {path}: do not store API keys in files; name the environment variable "
                            "that holds it with api_key_env")
    if name not in PRESETS and not table:
        known = ", ".join(sorted(PRESETS))
        raise BrainXAIError(f"unknown LLM backend '{name}': use one of {known}, 'builtin', or define "
                            f"[backends.{name}] in {path}")
    base = PRESETS.get(name) or Backend(name, table.get("protocol", "openai"), table.get("base_url", ""),
                                        table.get("model", ""))
    values = {k: v for k, v in table.items() if k in Backend.__dataclass_fields__ and k != "name"}
    unknown = set(table) - set(Backend.__dataclass_fields__)
    if unknown:
        raise BrainXAIError(f"LLM config {path}: unknown setting(s) {', '.join(sorted(unknown))} in "
                            f"[backends.{name}]")
    for key in Backend.__dataclass_fields__:
        env = os.environ.get(ENV_PREFIX + key.upper())
        if env is not None and key not in ("name", "api_key_env"):
            values[key] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    backend = replace(base, **{k: _coerce(k, v) for k, v in values.items()})
    if backend.protocol not in PROTOCOLS:
        raise BrainXAIError(f"LLM backend '{name}': protocol must be one of {', '.join(PROTOCOLS)}, "
                            f"not '{backend.protocol}'")
    if not backend.base_url or not backend.model:
        raise BrainXAIError(f"LLM backend '{name}' needs base_url and model (config file or {ENV_PREFIX}BASE_URL / "
                            f"{ENV_PREFIX}MODEL)")
    return backend


def _host(url: str) -> str:
    """The host requests will really connect to (urllib3's parser, as requests uses), or '' for a URL we refuse
    to interpret: user info ('user@host') and backslashes let two parsers disagree about the host."""
    from urllib3.util import parse_url

    if "@" in url or "\\" in url:
        return ""
    try:
        return (parse_url(requests.Request("POST", url).prepare().url).host or "").strip("[]").lower()
    except (requests.RequestException, ValueError):
        return ""


def is_local(url: str) -> bool:
    """True for this machine only (localhost, 127.0.0.0/8, ::1): every other host counts as cloud."""
    host = _host(url)
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def _api_key(backend: Backend) -> str | None:
    """The backend's own key variable first (a Mistral key must never go to x.ai); the generic
    BRAINXAI_LLM_API_KEY only for backends that name none."""
    key = os.environ.get(backend.api_key_env) if backend.api_key_env else os.environ.get(ENV_PREFIX + "API_KEY")
    if key is not None and (not key.strip() or any(c.isspace() or ord(c) > 255 for c in key)):
        env = backend.api_key_env or ENV_PREFIX + "API_KEY"
        raise BrainXAIError(f"the API key in {env} contains spaces, line breaks or non-Latin characters: set it "
                            "again, exactly as the provider gave it")
    return key


def check_allowed(backend: Backend) -> str | None:
    """Refuse, before anything is sent, a cloud endpoint without opt-in or without a key. Returns the key."""
    if not is_local(backend.base_url) and not backend.allow_cloud:
        host = urlparse(backend.base_url).hostname
        raise BrainXAIError(f"LLM backend '{backend.name}' would send the findings to {host}, off this machine: "
                            "opt in with --allow-cloud (or allow_cloud = true in the config) to use it")
    key = _api_key(backend)
    if not is_local(backend.base_url) and not key:
        env = backend.api_key_env or ENV_PREFIX + "API_KEY"
        raise BrainXAIError(f"LLM backend '{backend.name}' needs an API key: set {env} in the environment")
    return key


# ------------------------------------------------------------------------------------------------ prompt

SYSTEM_PROMPT = """You are a neuroradiologist writing a short structured report of a brain MRI analysis.
Use ONLY the facts listed in the findings. Do not add anything they do not contain: no enhancement pattern, oedema,
mass effect, midline shift, grade, subtype, history or recommendation for a specific treatment, and no anatomical
name, side or number that is not listed. Copy numbers as given (you may round them) with their units. Name the
tumour class exactly as the findings do. Keep the class probabilities as model outputs, not certainties.
Sections: Technique, Findings, Impression. Plain Markdown, no tables, at most 250 words."""


def _payload(findings: dict) -> dict:
    """The subset of the findings a report needs: no file format, checksums or software versions."""
    keep = {
        "input": {k: findings["input"][k] for k in ("kind", "shape", "spacing_mm", "phantom")},
        "diagnosis": findings["diagnosis"],
        "lesion": findings["lesion"],
        "regions": findings["regions"],
        "atlas": findings["atlas"],
        "explanations": findings["explanations"],
        "registration": None if findings["registration"] is None else {
            k: findings["registration"][k] for k in ("converged", "template")},
        "warnings": findings["warnings"],
    }
    assert_deidentified(keep)  # the last check before anything leaves the process
    return keep


def _call(entry: dict) -> str:
    """What the model predicts after an edit (a counterfactual or minimal-evidence entry), for the prompt."""
    return (f"the model predicts {CLASS_NAMES[entry['label']]}; probabilities "
            + ", ".join(f"{CLASS_NAMES[c]} {entry['probabilities'][c]:.2f}" for c in CLASSES))


def render_findings(findings: dict) -> str:
    """The findings as the model sees them: one fact per line, with units, then the same as JSON."""
    f = _payload(findings)
    d, lesion = f["diagnosis"], f["lesion"]
    lines = [f"Diagnosis (model class): {CLASS_NAMES[d['label']]}",
             "Class probabilities: " + ", ".join(f"{CLASS_NAMES[c]} {d['probabilities'][c]:.2f}" for c in CLASSES),
             f"Slices with tumour evidence: {d['slices_with_tumor_evidence']} of {d['slices_total']}",
             f"Lesion volume (segmentation head): {lesion['volume_ml']} mL"]
    if lesion["hemisphere"]:
        lines.append(f"Lesion side: {lesion['hemisphere']}")
    if lesion["centroid_mni"]:
        lines.append("Lesion centroid, MNI mm (x, y, z): " + ", ".join(f"{v:.0f}" for v in lesion["centroid_mni"]))
    if lesion["peak_region"]:
        lines.append(f"Peak atlas region: {lesion['peak_region']}")
    for r in f["regions"]:
        side = f" ({r['hemisphere']})" if r["hemisphere"] else ""
        of_region = "" if r["percent_of_region"] is None else f", {r['percent_of_region']}% of the region"
        lines.append(f"Region: {r['name']}{side}: {r['percent_of_lesion']}% of the lesion{of_region}")
    for e in f["explanations"]:
        dice = "not computed" if e["dice_vs_segmentation"] is None else f"{e['dice_vs_segmentation']}"
        cut = (f"where its mask probability is at least {e['threshold_level']}" if "threshold_level" in e else
               f"at percentile {e['threshold_percentile']}")
        lines.append(f"Saliency {e['method']} for {CLASS_NAMES[e['target_class']]}: mask {e['mask_volume_ml']} mL "
                     f"{cut}, Dice with segmentation {dice}")
        cf = e.get("counterfactual")
        if cf:
            lines.append(f"Counterfactual, {e['method']} region at percentile {cf['threshold_percentile']} inpainted "
                         f"from the surrounding tissue: {_call(cf)}")
        me = e.get("minimal_evidence")
        if me:
            lines.append(f"Minimal evidence, {e['method']} region alone ({me['area_percent_of_brain']}% of the brain on "
                         f"the explained slices, the rest blurred away): {_call(me)}")
        fa = e.get("faithfulness")
        if fa:
            lines.append(f"Faithfulness {e['method']} on {fa['slices']} slices: deletion AUC {fa['deletion_auc']:.2f} "
                         f"(random maps {fa['random_deletion_auc']:.2f}, lower is better), insertion AUC "
                         f"{fa['insertion_auc']:.2f} (random maps {fa['random_insertion_auc']:.2f}, higher is better)")
    for w in f["warnings"]:
        lines.append(f"Warning: {w}")
    return "Findings:\n- " + "\n- ".join(lines) + "\n\nSame findings as JSON:\n" + json.dumps(f, indent=1)


def build_messages(findings: dict, feedback: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_findings(findings)}]
    if feedback:  # the regeneration: the model is told what it got wrong
        messages.append({"role": "user", "content": feedback})
    return messages


# ------------------------------------------------------------------------------------------------ transport


@dataclass
class Completion:
    text: str
    backend: dict
    attempts: int
    seconds: float
    usage: dict = field(default_factory=dict)


def _request(backend: Backend, messages: list[dict]) -> tuple[str, dict]:
    if backend.protocol == "openai":
        url = backend.base_url.rstrip("/") + "/chat/completions"
        body = {"model": backend.model, "messages": messages, "temperature": backend.temperature, "stream": False}
        if backend.seed is not None:
            body["seed"] = backend.seed
    else:
        url = backend.base_url.rstrip("/") + "/api/chat"
        options = {"temperature": backend.temperature}
        if backend.seed is not None:
            options["seed"] = backend.seed
        body = {"model": backend.model, "messages": messages, "stream": False, "options": options}
    return url, body


def _content(backend: Backend, data) -> str:
    try:
        text = (data["choices"][0]["message"]["content"] if backend.protocol == "openai"
                else data["message"]["content"])
    except (KeyError, IndexError, TypeError):
        where = "choices[0].message.content" if backend.protocol == "openai" else "message.content"
        raise BrainXAIError(f"LLM backend '{backend.name}' answered without {where}: check that base_url and "
                            f"protocol match the server") from None
    if not isinstance(text, str) or not text.strip():
        raise BrainXAIError(f"LLM backend '{backend.name}' returned an empty report")
    return text.strip()


def _redact(text: str, key: str | None) -> str:
    text = " ".join(text.split())
    if key:  # replace before cutting, so no part of the key survives at the cut
        text = text.replace(key, "[key]")
    return text[:200]


def complete(backend: Backend, messages: list[dict], session: requests.Session | None = None) -> Completion:
    """One chat completion, with retries and backoff on 429 and 5xx. Raises BrainXAIError with one line."""
    key = check_allowed(backend)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url, body = _request(backend, messages)
    http = session or requests.Session()
    if is_local(backend.base_url):
        http.trust_env = False  # no proxy from the environment: local findings stay on this machine
    start = time.monotonic()
    for attempt in range(1, backend.max_retries + 2):
        try:
            # No redirects: a 307 would resend the findings (and the key) to wherever it points.
            response = http.post(url, json=body, headers=headers, allow_redirects=False,
                                 timeout=(min(10.0, backend.timeout_s), backend.timeout_s))
        except requests.Timeout:
            raise BrainXAIError(f"LLM backend '{backend.name}' did not answer within {backend.timeout_s:g} s: "
                                "try again, or raise timeout_s") from None
        except requests.ConnectionError:
            raise BrainXAIError(f"cannot reach LLM backend '{backend.name}' at {backend.public()['base_url']}: is "
                                "the server running and the URL right?") from None
        except (requests.RequestException, UnicodeError, ValueError) as exc:
            # Never the exception's text: requests puts header values (the key) into some of its messages.
            raise BrainXAIError(f"LLM request to backend '{backend.name}' failed ({type(exc).__name__}): check "
                                "base_url and the key's format") from None
        if 300 <= response.status_code < 400:
            raise BrainXAIError(f"LLM backend '{backend.name}' answered with a redirect (HTTP "
                                f"{response.status_code}), which is not followed: set base_url to the final address")
        if response.status_code in RETRY_STATUS and attempt <= backend.max_retries:
            delay = backend.backoff_s * 2 ** (attempt - 1)
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.replace(".", "", 1).isdigit():  # the server knows best, within our own time limit
                delay = max(delay, float(retry_after))
            time.sleep(min(delay, backend.timeout_s))
            continue
        if response.status_code in (401, 403):
            raise BrainXAIError(f"LLM backend '{backend.name}' refused the API key (HTTP {response.status_code}): "
                                "check the key in the environment")
        if response.status_code != 200:
            raise BrainXAIError(f"LLM backend '{backend.name}' failed with HTTP {response.status_code} after "
                                f"{attempt} attempt(s): {_redact(response.text, key)}")
        try:
            data = response.json()
        except ValueError:
            raise BrainXAIError(f"LLM backend '{backend.name}' returned malformed JSON: "
                                f"{_redact(response.text, key)[:80]!r}") from None
        usage = data.get("usage", {}) if isinstance(data, dict) else {}
        return Completion(_content(backend, data), backend.public(), attempt, round(time.monotonic() - start, 3),
                          usage if isinstance(usage, dict) else {})
    raise AssertionError("unreachable")  # the last attempt either returns or raises
