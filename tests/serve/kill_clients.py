"""Clients killed mid-stream (SIGKILL, no goodbye): their requests are aborted and their
KV blocks freed, and the server goes on serving.

usage: kill_clients.py URL MODEL CLIENTS
"""

import os
import signal
import subprocess
import sys
import time

from common import check, client, finish, metrics, outcome

url, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

# Each child streams a long answer and says when the first chunk arrived.
CHILD = """
import sys
from common import client
stream = client(sys.argv[1]).completions.create(model=sys.argv[2], prompt="Tell me a long story.",
    max_tokens=4000, temperature=0, stream=True, extra_body={"ignore_eos": True})
for i, chunk in enumerate(stream):
    if i == 0:
        print("streaming", flush=True)
"""

before = metrics(url)
here = os.path.dirname(os.path.abspath(__file__))
children = [
    subprocess.Popen([sys.executable, "-c", CHILD, url, model], stdout=subprocess.PIPE, cwd=here, text=True)
    for _ in range(n)
]
for ch in children:
    line = ch.stdout.readline().strip()
    check(line == "streaming", f"a child did not start streaming: {line!r}")
mid = metrics(url)
check(mid["engine_requests_in_flight"] - before["engine_requests_in_flight"] == n, f"{n} requests in flight")
check(mid["engine_kv_cache_blocks_in_use"] > 0, "the streams hold KV blocks")
for ch in children:
    os.kill(ch.pid, signal.SIGKILL)
for ch in children:
    ch.wait()

t0 = time.time()
while True:
    after = metrics(url)
    if after["engine_requests_in_flight"] == 0 or time.time() - t0 > 60:
        break
    time.sleep(0.1)
freed_s = time.time() - t0
aborted = outcome(after, "aborted") - outcome(before, "aborted")
check(aborted == n, f"/metrics aborted {aborted}, killed {n}")
check(after["engine_kv_cache_blocks_in_use"] == 0, f"KV blocks in use after the kills: {after['engine_kv_cache_blocks_in_use']}")
check(outcome(after, "ok") == outcome(before, "ok"), "no killed request counted as finished")
generated = after["engine_generation_tokens_total"] - before["engine_generation_tokens_total"]
check(generated < n * 4000, f"the killed requests stopped early ({generated} tokens)")

r = client(url).completions.create(model=model, prompt="The capital of France is", max_tokens=3, temperature=0)
check(r.usage.completion_tokens == 3, "serving after the kills")
finish({"killed": n, "aborted": aborted, "freed_after_s": round(freed_s, 2), "tokens_before_abort": generated})
