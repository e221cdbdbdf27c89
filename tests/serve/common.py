"""Helpers shared by the `engine serve` client scripts (driven by tests/serve.rs).

Each script takes the server's base URL (http://HOST:PORT) and the served model name,
talks to it with the official `openai` package (or plain HTTP where the client would
refuse to send a malformed request), prints one JSON summary line on stdout, and exits
non-zero with the failed checks on stderr.
"""

import json
import sys
import urllib.error
import urllib.request

import openai

FAILURES = []


def check(cond, what):
    """Record a failed check (the script goes on, so that one run shows every failure)."""
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return cond


def finish(summary):
    print(json.dumps(summary))
    sys.exit(1 if FAILURES else 0)


def client(url, **kw):
    # No retries: a 429 must reach the test, not be retried away.
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, **kw)


def async_client(url, **kw):
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, **kw)


def http(url, path, body=None, method=None, raw=None):
    """(status, headers, text) of one request; `raw` sends bytes as they are."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def metrics(url):
    """/metrics as {sample name with labels: value}."""
    status, _, text = http(url, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def outcome(m, name):
    return m.get(f'engine_requests_total{{outcome="{name}"}}', 0.0)
