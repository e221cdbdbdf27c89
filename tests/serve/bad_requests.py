"""Bad requests get a clear error in OpenAI's shape, and the server keeps serving.

usage: bad_requests.py URL MODEL
"""

import json
import sys

import openai

from common import check, client, finish, http, metrics, outcome

url, model = sys.argv[1:3]
c = client(url)
before = metrics(url)
seen = []


def expect_error(what, status, needle, call):
    try:
        call()
    except openai.APIStatusError as e:
        msg = (e.body or {}).get("message", "") if isinstance(e.body, dict) else str(e.body)
        check(e.status_code == status, f"{what}: status {e.status_code}, expected {status} ({msg})")
        check(needle in msg, f"{what}: message {msg!r} lacks {needle!r}")
        seen.append((what, e.status_code))
        return
    check(False, f"{what}: no error")


def expect_raw(what, path, raw, needle):
    status, _, text = http(url, path, raw=raw)
    body = json.loads(text)
    check(status == 400, f"{what}: status {status}")
    check(needle in body["error"]["message"] and body["error"]["type"] == "invalid_request_error",
          f"{what}: body {body}")
    seen.append((what, status))


msgs = [{"role": "user", "content": "hi"}]
expect_raw("invalid JSON", "/v1/completions", b'{"prompt": "x", ', "not valid JSON")
expect_raw("missing messages", "/v1/chat/completions", json.dumps({"model": model}).encode(), "`messages` is required")
expect_raw("a string for a number", "/v1/completions", json.dumps({"prompt": "x", "temperature": "hot"}).encode(),
           "`temperature` must be a number")
expect_error("unknown model", 404, "`no-such-model` does not exist",
             lambda: c.completions.create(model="no-such-model", prompt="x", max_tokens=2))
expect_error("max_tokens beyond the context", 400, "context is 8192 tokens",
             lambda: c.completions.create(model=model, prompt="hello", max_tokens=9000))
expect_error("a prompt longer than the context", 400, "context is 8192 tokens",
             lambda: c.completions.create(model=model, prompt="hello " * 9000, max_tokens=4))
expect_error("negative temperature", 400, "temperature must be >= 0",
             lambda: c.chat.completions.create(model=model, messages=msgs, temperature=-0.5))
expect_error("top_p above 1", 400, "top_p must be in (0, 1]",
             lambda: c.chat.completions.create(model=model, messages=msgs, top_p=1.5))
expect_error("empty messages", 400, "must not be empty",
             lambda: c.chat.completions.create(model=model, messages=[]))
expect_error("frequency_penalty", 400, "`frequency_penalty` is not supported",
             lambda: c.completions.create(model=model, prompt="x", frequency_penalty=0.5))
expect_error("n > 1", 400, "`n` must be 1", lambda: c.completions.create(model=model, prompt="x", n=2))
expect_error("too many logprobs", 400, "logprobs must be <= 20",
             lambda: c.completions.create(model=model, prompt="x", logprobs=21, max_tokens=1))

# Still serving.
r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
check(r.usage.completion_tokens == 4, f"a good request after the bad ones: {r}")
status, _, _ = http(url, "/health")
check(status == 200, f"/health {status}")
status, _, text = http(url, "/nope")
check(status == 404 and "no route /nope" in text, f"unknown path: {status} {text}")

after = metrics(url)
invalid = outcome(after, "invalid") - outcome(before, "invalid")
check(invalid == len(seen), f"/metrics counted {invalid} invalid requests, the script sent {len(seen)}")
finish({"errors": len(seen), "invalid": invalid})
