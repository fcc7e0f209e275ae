#!/usr/bin/env python3
"""Consuming proprio: alerts as they happen, and the digest for an LLM prompt.

- Alerts: MessagePack maps on `proprio.alert.<source>` (proto/README.md §3),
  also kept in the stream PROPRIO_ALERTS for 7 days.
- The digest: ~50 tokens of the system's health, on `proprio.digest` when it
  changes, and in the KV bucket `proprio-state`, key `digest`, always.

The prompt-builder pattern: an agent that is about to act on the system
reads the digest from KV (one round trip, no HTTP, no query language) and
puts it at the top of its prompt, so the model knows what "normal" and
"currently wrong" look like before it reads the task.

    pip install nats-py msgpack
    NATS_URL=nats://reader:secret@127.0.0.1:4222 python examples/consumer.py --until-alert

Exit status with --until-alert: 0 once an alert and a digest have been
received (and the prompt printed), 1 on timeout. With --expect (what
scripts/examples.sh checks): 0 only if the expected alert came, no other
alert came before it, and the prompt built after it matches
--expect-prompt; 2 if any of these failed.
"""

import argparse
import asyncio
import os
import re
import sys
import time

import msgpack
import nats
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

BUCKET = "proprio-state"
DIGEST_KEY = "digest"


def alert_line(a: dict) -> str:
    """One alert as one line, like `proprio alerts`."""
    what = a.get("diagnosis") or a.get("rendered", "")
    if a.get("diagnosis") and a.get("reason") != "silence":
        what = f"{a['diagnosis']}: {a.get('rendered', '')}"
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a["ts"] / 1000))
    return f"{ts} {a['reason']:<8} {a['source']} {a['kind']} score={a['score']:.1f} {what}"


async def read_digest(js) -> str:
    """The digest from KV; the warming text when proprio has not made one yet."""
    try:
        kv = await js.key_value(BUCKET)
        entry = await kv.get(DIGEST_KEY)
        return entry.value.decode()
    except (BucketNotFoundError, KeyNotFoundError):
        return "[OS BASELINE]\nbaseline: warming (no model yet)\nrecent: none\n[/OS BASELINE]"


def build_prompt(digest: str, task: str) -> str:
    """The prompt-builder pattern: the system's baseline first, then the task."""
    return (
        f"{digest.strip()}\n\n"
        "You operate the system summarised above. The block is its learned "
        "baseline: 'recent' lists what currently deviates from normal, most "
        "surprising first. Take it into account before acting.\n\n"
        f"Task: {task}\n"
    )


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", help="NATS credentials file (JWT + NKey seed)")
    p.add_argument("--until-alert", action="store_true",
                   help="exit once an alert and a digest have arrived")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--task", default="Deploy version 2.5 of svc3.")
    p.add_argument("--expect", metavar="SOURCE:TEXT",
                   help="with --until-alert: wait for an alert on SOURCE whose event contains TEXT; "
                        "any other alert before it is a false alert and fails the run")
    p.add_argument("--expect-prompt", metavar="REGEX",
                   help="with --expect: the prompt built after the alert must match REGEX "
                        "(case-insensitive, within one line)")
    a = p.parse_args()
    want_source, _, want_text = (a.expect or "").partition(":")

    def expected(alert: dict) -> bool:
        return not a.expect or (alert.get("source") == want_source
                                and want_text in alert.get("rendered", ""))

    opts = {"servers": a.nats.split(","), "name": "example-consumer"}
    if a.creds:
        opts["user_credentials"] = a.creds
    nc = await nats.connect(**opts)
    js = nc.jetstream()

    got_alert = asyncio.Event()
    got_digest = asyncio.Event()
    false_alerts = []

    async def on_alert(msg):
        try:
            alert = msgpack.unpackb(msg.data, raw=False)
        except Exception as e:  # a consumer must survive a bad message
            print(f"undecodable alert on {msg.subject}: {e}", flush=True)
            return
        if not expected(alert):
            print(f"ALERT (not the expected one)  {alert_line(alert)}", flush=True)
            if not got_alert.is_set():
                false_alerts.append(alert)
            return
        print(f"ALERT  {alert_line(alert)}", flush=True)
        got_alert.set()

    async def on_digest(msg):
        print("DIGEST (pushed on proprio.digest):", flush=True)
        print(msg.data.decode(), flush=True)
        if got_alert.is_set():
            got_digest.set()

    await nc.subscribe("proprio.alert.>", cb=on_alert)
    await nc.subscribe("proprio.digest", cb=on_digest)
    await nc.flush()
    print("listening on proprio.alert.> and proprio.digest", flush=True)

    # The prompt-builder pattern, right now: whatever the digest says.
    print("PROMPT (digest read from KV):", flush=True)
    print(build_prompt(await read_digest(js), a.task), flush=True)

    if not a.until_alert:
        try:
            await asyncio.sleep(a.timeout)
        finally:
            await nc.drain()
        return 0

    try:
        await asyncio.wait_for(got_alert.wait(), a.timeout)
        # proprio republishes the digest shortly after an alert (debounced).
        await asyncio.wait_for(got_digest.wait(), a.timeout)
    except asyncio.TimeoutError:
        print("timed out waiting for an alert and a digest", file=sys.stderr, flush=True)
        await nc.drain()
        return 1

    prompt = build_prompt(await read_digest(js), a.task)
    print("PROMPT (digest read from KV, after the alert):", flush=True)
    print(prompt, flush=True)
    await nc.drain()
    failed = []
    if false_alerts:
        failed.append(f"{len(false_alerts)} alert(s) before the expected one (tolerance: none), "
                      f"first: {alert_line(false_alerts[0])}")
    if a.expect_prompt and not re.search(a.expect_prompt, prompt, re.IGNORECASE):
        failed.append(f"the prompt does not match {a.expect_prompt!r}")
    for f in failed:
        print(f"expectation failed: {f}", file=sys.stderr, flush=True)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
