"""Many concurrent streaming clients against a server with a small KV cache and a small
waiting queue: each request completes with the text it gets when served alone, or is
refused with a clean 429 (Retry-After); none hangs; /metrics agrees with what the
clients saw; the KV blocks in use return to zero.

usage: overload.py URL MODEL CLIENTS
"""

import asyncio
import sys
import time

import openai

from common import async_client, check, client, finish, metrics, outcome

url, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
PROMPTS = [
    "The capital of France is",
    "Water boils at",
    "The largest planet in the solar system is",
    "One, two, three,",
]
MAX_TOKENS = 16
HANG_S = 600

# What each prompt gives when served alone.
alone = {}
for p in PROMPTS:
    r = client(url).completions.create(model=model, prompt=p, max_tokens=MAX_TOKENS, temperature=0)
    alone[p] = r.choices[0].text
before = metrics(url)


async def one(c, i):
    p = PROMPTS[i % len(PROMPTS)]
    try:
        stream = await c.completions.create(model=model, prompt=p, max_tokens=MAX_TOKENS, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
        text, usage = "", None
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].text
            if ch.usage:
                usage = ch.usage
        if text != alone[p]:
            return ("wrong", f"{p!r}: {text!r} != alone {alone[p]!r}")
        return ("ok", usage.completion_tokens if usage else None)
    except openai.RateLimitError as e:
        retry = e.response.headers.get("retry-after")
        msg = e.body.get("message", "") if isinstance(e.body, dict) else ""
        clean = e.status_code == 429 and retry is not None and "overloaded" in msg
        return ("429", None) if clean else ("bad-429", f"retry-after={retry} body={e.body}")
    except Exception as e:  # noqa: BLE001 - every other failure is a test failure
        return ("error", f"{type(e).__name__}: {e}")


async def main():
    c = async_client(url, timeout=HANG_S)
    tasks = [asyncio.wait_for(one(c, i), HANG_S) for i in range(n)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await c.close()
    return [r if not isinstance(r, BaseException) else ("hang", repr(r)) for r in results]


t0 = time.time()
results = asyncio.run(main())
wall = time.time() - t0
kinds = {}
for kind, detail in results:
    kinds[kind] = kinds.get(kind, 0) + 1
    if kind not in ("ok", "429"):
        check(False, f"{kind}: {detail}")
ok, rejected = kinds.get("ok", 0), kinds.get("429", 0)
check(ok + rejected == n, f"outcomes {kinds}")
check(ok > 0 and rejected > 0, f"expected both completions and 429s with a small queue, got {kinds}")
check(all(d == MAX_TOKENS for k, d in results if k == "ok"), "every completed stream has max_tokens tokens")

# The engine finishes aborts and frees blocks within a pass; allow a moment.
deadline = time.time() + 30
while True:
    after = metrics(url)
    if after["engine_requests_in_flight"] == 0 or time.time() > deadline:
        break
    time.sleep(0.2)
got_ok = outcome(after, "ok") - outcome(before, "ok")
got_429 = outcome(after, "rejected") - outcome(before, "rejected")
check(got_ok == ok, f"/metrics ok {got_ok} != clients' {ok}")
check(got_429 == rejected, f"/metrics rejected {got_429} != clients' 429s {rejected}")
for other in ("aborted", "timeout", "error", "invalid"):
    check(outcome(after, other) == outcome(before, other), f"/metrics {other} moved")
check(after["engine_kv_cache_blocks_in_use"] == 0, f"KV blocks in use {after['engine_kv_cache_blocks_in_use']}")
check(after["engine_requests_waiting"] == 0 and after["engine_requests_running"] == 0, "queues empty")
gen = after["engine_generation_tokens_total"] - before["engine_generation_tokens_total"]
check(gen == ok * MAX_TOKENS, f"/metrics generation tokens {gen} != {ok} x {MAX_TOKENS}")
finish({"clients": n, "ok": ok, "rejected_429": rejected, "wall_s": round(wall, 2),
        "preemptions": after["engine_preemptions_total"] - before["engine_preemptions_total"]})
