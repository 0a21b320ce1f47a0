"""The openai backend against a real HTTP server on 127.0.0.1 that plays an OpenAI-compatible API."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recbole_llm.llm.backend import Completion, LLMError, Prompt
from recbole_llm.llm.backends.openai import OpenAIBackend
from recbole_llm.llm.cache import CachedBackend

pytest.importorskip("httpx")  # the `api` extra

SECRET = "sk-fake-SECRET-4242"
KEY_ENV = "RECBOLE_LLM_TEST_KEY"


def echo(body: dict):
    """The default answer: checks the request, echoes the user message, reports token usage."""
    messages = body["messages"]
    assert body["model"] == "tiny" and body["temperature"] == 0 and body["max_tokens"] == 16
    assert [m["role"] for m in messages] in (["user"], ["system", "user"])
    user = messages[-1]["content"]
    usage = {} if "no usage" in user else {"usage": {"prompt_tokens": len(user), "completion_tokens": 2}}
    return 200, {"choices": [{"message": {"role": "assistant", "content": f"echo {user}"}}], **usage}, {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            auth = self.headers.get("Authorization")
            server.requests.append({"path": self.path, "auth": auth, "body": body})
            server.active += 1
            server.most_active = max(server.most_active, server.active)
        try:
            status, payload, headers = (
                server.respond(body)
                if self.path == "/v1/chat/completions"
                else (404, {"error": {"message": "no such route"}}, {})
            )
        finally:
            with server.lock:
                server.active -= 1
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.respond, httpd.requests, httpd.lock = echo, [], threading.Lock()
    httpd.active = httpd.most_active = 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def backend(server, **kwargs):
    return OpenAIBackend("tiny", base_url=server.url + "/", api_key_env=KEY_ENV, backoff_s=0.001, **kwargs)


def user_text(body):
    return body["messages"][-1]["content"]


def test_request_and_answer(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    answers = backend(server).generate(
        [Prompt("hello", system="be brief", answer_prefix="Answer:"), Prompt("no usage")], 16
    )
    assert answers == [
        Completion("echo hello\nAnswer:", len("hello\nAnswer:"), 2),
        Completion("echo no usage", 0, 0),
    ]
    first = next(r for r in server.requests if "hello" in user_text(r["body"]))
    assert first["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert first["auth"] is None  # no key set: local servers need none


def test_settings_hold_the_server_but_never_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    llm = backend(server)
    llm.generate([Prompt("hi")], 16)
    assert server.requests[0]["auth"] == f"Bearer {SECRET}"
    assert llm.identity() == {"backend": "openai", "model": "tiny", "base_url": server.url}
    assert SECRET not in repr(llm)
    with pytest.raises(LLMError, match="cannot read next-token logits"):
        llm.label_logits([Prompt("hi")], ["Yes", "No"])


def test_answers_keep_prompt_order_when_the_server_answers_out_of_order(server):
    def slow_first(body):
        time.sleep(0.04 * (8 - int(user_text(body).split()[-1])))
        return echo(body)

    server.respond = slow_first
    arrived = []
    answers = backend(server, max_concurrency=4).generate(
        [Prompt(f"item {i}") for i in range(8)], 16, on_result=lambda i, c: arrived.append(i)
    )
    assert [a.text for a in answers] == [f"echo item {i}" for i in range(8)]
    assert arrived != sorted(arrived) and sorted(arrived) == list(range(8))
    assert server.most_active == 4


def test_rate_limit_is_retried_honouring_retry_after(server):
    seen = set()

    def limited_once(body):
        if user_text(body) not in seen:
            seen.add(user_text(body))
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        return echo(body)

    server.respond = limited_once
    start = time.perf_counter()
    llm = backend(server)
    llm.backoff_s = 30.0  # only Retry-After: 0 keeps this test fast
    assert [a.text for a in llm.generate([Prompt("a"), Prompt("b")], 16)] == ["echo a", "echo b"]
    assert len(server.requests) == 4
    assert time.perf_counter() - start < 5


def test_exhausted_retries_raise_one_actionable_error_and_stop_sending(server):
    server.respond = lambda body: (500, {"error": {"message": "overloaded"}}, {})
    with pytest.raises(LLMError) as caught:
        backend(server, max_retries=2, max_concurrency=1).generate([Prompt(f"p{i}") for i in range(3)], 16)
    message = str(caught.value)
    assert "3 attempts" in message and "HTTP 500" in message and "overloaded" in message
    assert len(server.requests) == 3  # the other prompts were never sent


def test_bad_credentials_name_the_variable_never_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.respond = lambda body: (401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}, {})
    with pytest.raises(LLMError) as caught:
        backend(server).generate([Prompt("hi")], 16)
    assert KEY_ENV in str(caught.value) and "HTTP 401" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert len(server.requests) == 1  # not retried


def test_not_found_points_at_base_url_and_model(server):
    llm = OpenAIBackend("tiny", base_url=server.url.removesuffix("/v1"), api_key_env=KEY_ENV)
    with pytest.raises(LLMError, match="check base_url .* and the model \\(tiny\\)"):
        llm.generate([Prompt("hi")], 16)


def test_finished_answers_reach_the_cache_when_a_later_request_fails(server, tmp_path):
    def reject_bad(body):
        if "bad" in user_text(body):
            return 400, {"error": {"message": "context too long"}}, {}
        return echo(body)

    server.respond = reject_bad
    batch = [Prompt("ok 0"), Prompt("ok 1"), Prompt("bad"), Prompt("ok 3")]
    with pytest.raises(LLMError, match="context too long"):
        CachedBackend(backend(server, max_concurrency=1), tmp_path).generate(batch, 16)

    server.respond, server.requests = echo, []
    cached = CachedBackend(backend(server), tmp_path)
    answers = cached.generate(batch, 16)
    assert [a.text for a in answers] == [f"echo {p.user}" for p in batch]
    assert sorted(user_text(r["body"]) for r in server.requests) == ["bad", "ok 3"]
    assert (cached.hits, cached.misses) == (2, 2)
