"""A real HTTP server on 127.0.0.1 that speaks both LLM protocols (OpenAI-compatible chat completions and Ollama's
/api/chat), for the report tests. The requested model name picks the behaviour; the reports it writes are built
from the findings it receives in the prompt, so a 'correct' answer is only correct if the prompt carried them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from brainxai.reporting.report import CLASS_NAMES

STALL_S = 3.0  # longer than the tests' timeout, short enough to end on its own


def _findings(messages: list[dict]) -> dict:
    user = next(m["content"] for m in messages if m["role"] == "user")
    return json.loads(user.split("Same findings as JSON:\n", 1)[1])


def write_report(f: dict, flaw: str | None = None) -> str:
    """A radiologist-style report of the findings, with at most one deliberate flaw."""
    d, lesion = f["diagnosis"], f["lesion"]
    label = d["label"]
    if flaw == "wrong-type":
        label = "meningioma" if label != "meningioma" else "glioma"
    lines = ["## Findings"]
    if lesion["volume_ml"] > 0:
        side = lesion["hemisphere"]
        if flaw == "wrong-side":
            side = {"left": "right", "right": "left"}.get(side, "left")
        volume = lesion["volume_ml"] + (10 if flaw == "wrong-number" else 0)
        where = f" in the {side} hemisphere" if side else ""
        lines.append(f"A {volume:.1f} mL lesion{where} was segmented.")
        if f["regions"]:
            r = f["regions"][0]
            lines.append(f"The largest share, {r['percent_of_lesion']:.1f}% of the lesion, lies in the {r['name']}.")
        if flaw == "invent-region":
            lines.append("It extends into the thalamus.")
    else:
        lines.append("No lesion was segmented.")
    lines += ["", "## Impression", f"{CLASS_NAMES[label].capitalize()} favoured by the classifier "
              f"(probability {d['probabilities'][d['label']]:.2f})."]
    return "\n".join(lines)


class _Handler(BaseHTTPRequestHandler):
    server: "LLMServer"

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: str, headers: dict | None = None):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the stall test): fine
            pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path not in ("/v1/chat/completions", "/api/chat"):
            return self._send(404, json.dumps({"error": "not found"}))
        model, messages = body["model"], body["messages"]
        key = (model, self.path)  # counted per protocol, so each protocol sees the same script
        count = self.server.calls[key] = self.server.calls.get(key, 0) + 1
        if model == "stall":
            time.sleep(STALL_S)
        if model == "server-error":
            # Echoes the request's Authorization header: the client must not repeat it in its error.
            return self._send(500, json.dumps({"error": "internal", "auth": self.headers.get("Authorization")}))
        if model == "rate-limited" and count == 1:
            return self._send(429, json.dumps({"error": "slow down"}), {"Retry-After": "0"})
        if model == "retry-after-1" and count == 1:
            return self._send(429, json.dumps({"error": "slow down"}), {"Retry-After": "1"})
        if model == "always-429":
            return self._send(429, json.dumps({"error": "slow down"}))
        if model == "flaky-500" and count == 1:
            return self._send(503, json.dumps({"error": "warming up"}))
        if model == "bad-request":
            return self._send(400, json.dumps({"error": "unknown parameter"}))
        if model == "redirect":
            return self._send(307, "{}", {"Location": "http://192.0.2.1/v1/chat/completions"})
        if model == "refusal":
            text = "I'm sorry, I can't help with writing a medical report."
            return self._send(200, json.dumps({"choices": [{"message": {"content": text}}]}))
        if model == "malformed":
            return self._send(200, '{"choices": [ {"message": ')
        regenerated = len(messages) > 2  # the client sent back the failed report with its feedback
        flaw = None if model in ("correct", "rate-limited", "stall", "retry-after-1", "flaky-500") or (model == "fixes-on-retry" and regenerated) \
            else {"fixes-on-retry": "invent-region"}.get(model, model)
        text = write_report(_findings(messages), flaw)
        if self.path == "/api/chat":
            return self._send(200, json.dumps({"model": model, "message": {"role": "assistant", "content": text},
                                               "done": True}))
        return self._send(200, json.dumps({"id": "x", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": text}}], "usage": {"total_tokens": 100}}))


class LLMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.calls: dict[tuple[str, str], int] = {}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()



if __name__ == "__main__":  # a stand-in server for trying the LLM path by hand; ends by itself
    import argparse

    parser = argparse.ArgumentParser(description="scripted LLM stand-in on 127.0.0.1 (model name = behaviour)")
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    with LLMServer() as server:
        print(server.url, flush=True)
        time.sleep(args.seconds)
