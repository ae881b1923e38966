"""`quarrel serve` on loopback, driven by the official `openai` client and
raw HTTP. Usage: serve_test.py QUARREL_BINARY MODEL.gguf SCENARIO.

Each scenario starts its own servers on free ports and exits non-zero with
a message on the first failed check.
"""

import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import openai

BIN, MODEL, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3]


SERVERS = []


@atexit.register
def kill_servers():
    for proc in SERVERS:
        if proc.poll() is None:
            proc.kill()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [BIN, "serve", "-m", MODEL, "--port", str(self.port), "-t", "2", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        SERVERS.append(self.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.proc.stderr.read()}"
            try:
                status, _, _ = self.request("GET", "/health")
                if status == 200:
                    return
                assert status == 503, status
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url(), api_key=key, max_retries=0, timeout=300)

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=headers or {})
        r = c.getresponse()
        out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
        c.close()
        return out

    def metric(self, name):
        _, _, text = self.request("GET", "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, "server exit status"


def prompts(n):
    """Distinct prompts from 4 to about 150 tokens."""
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex".split()
    return [
        f"Story {i}: " + " ".join(words[(i * 3 + j) % len(words)] for j in range(3 + i * 9))
        for i in range(n)
    ]


def complete_all(client, texts, max_tokens, concurrent):
    out = [None] * len(texts)

    def one(i):
        r = client.completions.create(
            model="m", prompt=texts[i], max_tokens=max_tokens, temperature=0,
            extra_body={"ignore_eos": True},
        )
        out[i] = r.choices[0].text

    if concurrent:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
        [t.start() for t in threads]
        [t.join() for t in threads]
    else:
        for i in range(len(texts)):
            one(i)
    return out


def scenario_openai():
    s = Server("--api-key", "sekrit")
    c = s.client("sekrit")
    assert [m.id for m in c.models.list().data] == [os.path.basename(MODEL)[:-5]]

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model="m", messages=msgs, max_tokens=16, temperature=0)
    whole = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert whole and r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.prompt_tokens > 5 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(c.chat.completions.create(
        model="m", messages=msgs, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole, (text, whole)
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason], finals
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    # Completions: llama.cpp's greedy continuation of this prompt starts " Paris".
    r = c.completions.create(model="m", prompt="The capital of France is", max_tokens=8,
                             temperature=0, logprobs=3)
    assert r.choices[0].text.startswith(" Paris"), r.choices[0].text
    lp = r.choices[0].logprobs
    assert lp.tokens[0] == " Paris" and len(lp.top_logprobs[0]) == 3
    assert abs(max(lp.top_logprobs[0].values()) - lp.token_logprobs[0]) < 1e-6
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="m", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
    assert streamed == r.choices[0].text, (streamed, r.choices[0].text)

    r = c.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                  logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens and len(content[0].top_logprobs) == 2

    # A stop string ends the text before it.
    r = c.completions.create(model="m", prompt="The capital of France is", max_tokens=16,
                             temperature=0, stop=["."])
    assert r.choices[0].finish_reason == "stop" and "." not in r.choices[0].text, r

    # Sampling with a seed repeats itself.
    a, b = (c.completions.create(model="m", prompt="Once upon a time", max_tokens=12,
                                 temperature=0.9, top_p=0.9, seed=42).choices[0].text
            for _ in range(2))
    assert a == b, (a, b)

    try:
        s.client("wrong").models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    s.stop()


def scenario_concurrency():
    texts = prompts(16)
    a = Server("--prefill-chunk", "64")
    alone = complete_all(a.client(), texts, 24, concurrent=False)
    a.stop()
    b = Server("--prefill-chunk", "64")
    together = complete_all(b.client(), texts, 24, concurrent=True)
    for i, (x, y) in enumerate(zip(alone, together)):
        assert x == y, f"request {i}: alone {x!r}, batched {y!r}"
    b.stop()


def scenario_preemption():
    texts = prompts(8)
    a = Server()
    alone = complete_all(a.client(), texts, 48, concurrent=False)
    a.stop()
    # 4 MiB: about ten blocks of 16 positions, far less than 8 sequences need.
    b = Server("--kv-mem", "4")
    together = complete_all(b.client(), texts, 48, concurrent=True)
    assert b.metric("quarrel_preemptions_total") > 0, "the budget forced no preemption"
    for i, (x, y) in enumerate(zip(alone, together)):
        assert x == y, f"request {i}: alone {x!r}, preempted {y!r}"
    assert b.metric("quarrel_kv_blocks_used") == 0
    b.stop()


def open_stream(s, body):
    """A streaming completion whose first event has arrived."""
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    c.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True, "ignore_eos": True}))
    r = c.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")
    r.readline()
    return c, r


def scenario_disconnect():
    s = Server()
    c, r = open_stream(s, {"prompt": "Count to a thousand:", "max_tokens": 3000})
    for _ in range(2):
        assert r.readline().startswith(b"data: ")
        r.readline()
    assert s.metric("quarrel_kv_blocks_used") > 0
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    deadline = time.time() + 10
    while s.metric("quarrel_kv_blocks_used") > 0 or s.metric("quarrel_running_sequences") > 0:
        assert time.time() < deadline, "the sequence was not freed"
        time.sleep(0.02)
    assert s.metric("quarrel_generation_tokens_total") < 3000
    s.stop()


def expect_error(s, path, body, status, words):
    got, headers, text = s.request("POST", path, body)
    assert got == status, (got, text)
    err = json.loads(text)["error"]
    assert all(w in err["message"] for w in words), err
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return headers


def scenario_bad_input():
    s = Server("--ctx-size", "64", "--parallel", "1", "--max-queue", "1")
    chat, comp = "/v1/chat/completions", "/v1/completions"
    expect_error(s, comp, b'{"prompt": "hi", ', 400, ["invalid request body"])
    expect_error(s, comp, b"[1, 2]", 400, ["invalid request body"])
    expect_error(s, comp, {"prompt": "hi", "max_tokens": "ten"}, 400, ["invalid request body"])
    expect_error(s, comp, {"max_tokens": 3}, 400, ["prompt"])
    expect_error(s, chat, {"messages": "hello"}, 400, ["invalid request body"])
    expect_error(s, chat, {"messages": []}, 400, ["messages"])
    expect_error(s, comp, {"prompt": "hi", "temperature": 5}, 400, ["temperature"])
    expect_error(s, comp, {"prompt": "hi", "max_tokens": 0}, 400, ["max_tokens"])
    expect_error(s, comp, {"prompt": "hi", "n": 3}, 400, ["n = 1"])
    expect_error(s, comp, {"prompt": [1, 99999999]}, 400, ["vocabulary"])
    expect_error(s, comp, {"prompt": "word " * 100}, 400, ["tokens", "64"])
    status, _, _ = s.request("GET", "/v1/nothing")
    assert status == 404

    # One running, one waiting: the rest are turned away with Retry-After.
    results = []

    def one():
        body = {"prompt": "Count:", "max_tokens": 40, "ignore_eos": True}
        status, headers, _ = s.request("POST", comp, body)
        results.append((status, headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(st for st, _ in results)[:2] == [200, 200], results
    assert all(st in (200, 503) for st, _ in results) and (503, "1") in results, results
    assert s.metric('quarrel_requests_total{status="503"}') >= 1
    # Still serving.
    status, _, _ = s.request("POST", comp, {"prompt": "hi", "max_tokens": 2})
    assert status == 200
    s.stop()


def sigterm_mid_stream(server_args, max_tokens, reason):
    """SIGTERM while a stream is in flight: the stream ends with `reason`
    and [DONE], and the server exits 0."""
    s = Server(*server_args)
    _, r = open_stream(s, {"prompt": "Hello", "max_tokens": max_tokens})
    s.proc.send_signal(signal.SIGTERM)
    rest = r.read().decode()
    assert f'"finish_reason":"{reason}"' in rest and rest.endswith("data: [DONE]\n\n"), rest[-300:]
    assert s.proc.wait(timeout=30) == 0


def scenario_shutdown():
    # In flight at SIGTERM: finishes normally.
    sigterm_mid_stream([], 40, "length")
    # Past --shutdown-timeout, in-flight requests are cancelled.
    sigterm_mid_stream(["--shutdown-timeout", "0.5"], 100000, "abort")


globals()["scenario_" + SCENARIO]()
print(f"{SCENARIO}: ok")
