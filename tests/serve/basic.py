"""The official openai client against `engine serve`: completions and chat, streamed and
not, usage (also in the last streamed chunk), logprobs, stop strings and seeds.

usage: basic.py URL MODEL EXPECTED.json
EXPECTED.json: {"max_tokens": N, "completion": {"prompt", "text"}, "chat": {"prompt", "text"}}
with the texts `engine generate` printed for the same prompts (greedy).
"""

import json
import sys

from common import check, client, finish, metrics, outcome

url, model, expected_path = sys.argv[1:4]
exp = json.load(open(expected_path))
n = exp["max_tokens"]
c = client(url)
summary = {}

models = [m.id for m in c.models.list().data]
check(models == [model], f"/v1/models lists {models}, expected [{model}]")
before = metrics(url)

# Completions, whole and streamed: the greedy text equals `engine generate`'s.
p, want = exp["completion"]["prompt"], exp["completion"]["text"]
r = c.completions.create(model=model, prompt=p, max_tokens=n, temperature=0)
got = r.choices[0].text
check(got == want, f"completion: {got!r} != generate's {want!r}")
check(r.usage.completion_tokens <= n and r.usage.prompt_tokens > 0, f"completion usage {r.usage}")
check(r.object == "text_completion" and r.model == model, f"completion object/model {r.object} {r.model}")
chunks = list(c.completions.create(model=model, prompt=p, max_tokens=n, temperature=0, stream=True,
                                   stream_options={"include_usage": True}))
text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
check(text == want, f"streamed completion: {text!r} != {want!r}")
check(chunks[-1].usage is not None and not chunks[-1].choices, "the last streamed chunk carries the usage")
check(chunks[-1].usage.completion_tokens == r.usage.completion_tokens, f"streamed usage {chunks[-1].usage} vs {r.usage}")
finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
check(finishes[-1] in ("length", "stop") and all(f is None for f in finishes[:-1]), f"finish reasons {finishes}")
summary["completion_tokens"] = r.usage.completion_tokens

# Chat, whole and streamed.
p, want = exp["chat"]["prompt"], exp["chat"]["text"]
msgs = [{"role": "user", "content": p}]
r = c.chat.completions.create(model=model, messages=msgs, max_tokens=n, temperature=0)
got = r.choices[0].message.content
check(got == want, f"chat: {got!r} != generate's {want!r}")
check(r.choices[0].message.role == "assistant" and r.object == "chat.completion", "chat message shape")
stream = c.chat.completions.create(model=model, messages=msgs, max_tokens=n, temperature=0, stream=True,
                                   stream_options={"include_usage": True})
chunks = list(stream)
check(chunks[0].choices[0].delta.role == "assistant", "the first chat chunk names the role")
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
check(text == want, f"streamed chat: {text!r} != {want!r}")
check(chunks[-1].usage is not None and chunks[-1].usage.total_tokens == r.usage.total_tokens, "chat streamed usage")

# Logprobs: one entry per token, top-k sorted, greedy picks the most likely.
r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3)
lp = r.choices[0].logprobs
check(len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs), f"completion logprobs {lp}")
check("".join(lp.tokens) == r.choices[0].text, f"logprob tokens {lp.tokens} spell the text {r.choices[0].text!r}")
for i, top in enumerate(lp.top_logprobs):
    check(len(top) <= 3 and abs(max(top.values()) - lp.token_logprobs[i]) < 1e-4, f"top_logprobs[{i}] {top}")
r = c.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
content = r.choices[0].logprobs.content
check(len(content) == r.usage.completion_tokens, f"chat logprobs count {len(content)} vs {r.usage}")
check(all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content),
      "chat top_logprobs sorted, two each")
stream = c.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0, logprobs=True,
                                   top_logprobs=1, stream=True)
streamed = [t for ch in stream if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
check([t.token for t in streamed] == [t.token for t in content], "streamed chat logprobs follow the tokens")

# Stop strings end the text before them; seeds make sampling repeatable.
want = exp["completion"]["text"]
stop = want.strip()[len(want.strip()) // 2:][:3] if len(want.strip()) > 4 else None
if stop:
    r = c.completions.create(model=model, prompt=exp["completion"]["prompt"], max_tokens=n, temperature=0, stop=[stop])
    got = r.choices[0].text
    check(r.choices[0].finish_reason == "stop" and got == want[:want.index(stop)], f"stop {stop!r}: {got!r}")
a, b = (c.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0.9, seed=7,
                             extra_body={"top_k": 40, "min_p": 0.05}).choices[0].text for _ in range(2))
check(a == b, f"same seed, different samples: {a!r} vs {b!r}")

after = metrics(url)
ok = outcome(after, "ok") - outcome(before, "ok")
summary["ok"] = ok
check(ok == 10, f"/metrics counted {ok} ok requests, the script made 10")
check(after["engine_kv_cache_blocks_in_use"] == 0, "KV blocks in use after the script")
finish(summary)
