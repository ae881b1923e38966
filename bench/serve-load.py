#!/usr/bin/env python3
"""Load test of an OpenAI-compatible server on loopback: N concurrent
clients, each sending streaming completions back to back for T seconds.
Prints generated tokens/s (aggregate), TTFT and inter-token latency
percentiles, requests and errors; with --rss-pid, the server's RSS at each
tenth of the run. Standard library only.

  bench/serve-load.py --port 8080 -c 8 -t 60 [-n 64] [--rss-pid PID] [--json]

Tokens are counted from the final usage chunk (stream_options.include_usage),
else as the number of text chunks.
"""

import argparse
import http.client
import json
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=8080)
p.add_argument("-c", "--clients", type=int, default=8)
p.add_argument("-t", "--seconds", type=float, default=60)
p.add_argument("-n", "--max-tokens", type=int, default=64)
p.add_argument("--rss-pid", type=int)
p.add_argument("--json", action="store_true")
a = p.parse_args()

TOPICS = ["rivers", "compilers", "bread", "tides", "chess", "glaciers", "jazz", "bees"]
lock = threading.Lock()
ttft, itl, tokens, errors, requests, finished = [], [], [0], [0], [0], []
stop_at = time.time() + a.seconds


def client(i):
    k = 0
    while time.time() < stop_at:
        k += 1
        body = {
            "prompt": f"Client {i}, request {k}: write a short note about {TOPICS[(i + k) % len(TOPICS)]}.",
            "max_tokens": a.max_tokens, "temperature": 0.7, "seed": i * 1000 + k,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
        }
        t0 = time.time()
        try:
            c = http.client.HTTPConnection(a.host, a.port, timeout=600)
            c.request("POST", "/v1/completions", body=json.dumps(body),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                r.read()
                raise RuntimeError(f"status {r.status}")
            last, first, n, chunks, done = None, None, 0, 0, False
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    done = True
                    break
                ev = json.loads(line[6:])
                now = time.time()
                if ev.get("usage"):
                    n = ev["usage"]["completion_tokens"]
                if ev.get("choices") and ev["choices"][0].get("text"):
                    chunks += 1
                    if first is None:
                        first = now
                        with lock:
                            ttft.append(now - t0)
                    elif last is not None:
                        with lock:
                            itl.append(now - last)
                    last = now
            c.close()
            if not done:
                raise RuntimeError("stream ended without [DONE]")
            with lock:
                tokens[0] += n or chunks
                requests[0] += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted
            with lock:
                errors[0] += 1
            if not a.json:
                print(f"client {i}: {e}")
            time.sleep(0.1)
    with lock:
        finished.append(time.time())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


rss = []
t_start = time.time()
threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
[t.start() for t in threads]
while any(t.is_alive() for t in threads):
    time.sleep(a.seconds / 10)
    if a.rss_pid:
        rss.append(rss_kib(a.rss_pid))
[t.join() for t in threads]
# Until the last client's last request ended (the RSS polling above wakes
# only every tenth of the run).
elapsed = max(finished) - t_start


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


out = {
    "clients": a.clients, "seconds": round(elapsed, 1), "requests": requests[0], "errors": errors[0],
    "gen_tokens": tokens[0], "gen_tok_s": round(tokens[0] / elapsed, 2),
    "ttft_p50_ms": round(pct(ttft, 50) * 1e3, 1), "ttft_p99_ms": round(pct(ttft, 99) * 1e3, 1),
    "itl_p50_ms": round(pct(itl, 50) * 1e3, 1), "itl_p99_ms": round(pct(itl, 99) * 1e3, 1),
}
if rss:
    out["rss_mib"] = [round(r / 1024) for r in rss]
print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
