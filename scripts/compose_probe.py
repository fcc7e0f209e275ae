#!/usr/bin/env python3
"""Host-side probes for scripts/compose-test.sh: real NATS clients (nats-py,
as the examples use) against the compose stack, as its documented users.

    perms      the least-privilege users: what each may not do is refused
    publish    N probe events as `publisher`, each acknowledged by JetStream
    count      distinct probe events in the telemetry stream (as `proprio`)
    replicas   every proprio stream's replica count and its current peers

Each prints one line per finding and exits 0 only if all is as expected.
"""

import argparse
import asyncio
import json
import sys
import time

import msgpack
import nats
from nats.errors import TimeoutError as NatsTimeout

STREAM = "PROPRIO_TELEMETRY"


def url(host: str, user: str, password: str) -> str:
    return f"nats://{user}:{password}@{host}"


async def connect(u: str, errors: list, **kw):
    async def on_error(e):
        errors.append(str(e))

    return await nats.connect(u, error_cb=on_error, name="compose-probe",
                              allow_reconnect=True, **kw)


async def perms(a) -> int:
    """What each user may not do, tried for real; the server must refuse it.

    A refusal is the server's `Permissions Violation` for that subject. Each
    refusal is paired with what the same user may do (a publisher publishes
    telemetry, a reader subscribes to alerts) without an error, so a broken
    connection cannot pass for enforcement."""
    failed = 0

    def report(ok: bool, what: str):
        nonlocal failed
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    async def attempt(user, password, action, subject):
        errors = []
        nc = await connect(url(a.host, user, password), errors)
        try:
            if action == "sub":
                await nc.subscribe(subject)
            elif action == "jspub":  # stored and acknowledged by the stream
                await nc.jetstream().publish(subject, b"compose-probe", timeout=5)
            else:
                await nc.publish(subject, b"compose-probe")
            await nc.flush(timeout=5)
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
        return [e for e in errors if "permissions violation" in e.lower()]

    pub, rdr, wat = ("publisher", a.publisher), ("reader", a.reader), ("watcher", a.watcher)
    cases = [
        # (user, action, subject, should be refused, what it shows)
        (pub, "pub", "os.pulse.compose-probe", False, "publisher publishes telemetry"),
        (pub, "jspub", "os.pulse.compose-probe", False, "publisher's telemetry is acknowledged by JetStream"),
        (pub, "sub", "os.>", True, "publisher cannot read telemetry"),
        (pub, "sub", "proprio.alert.>", True, "publisher cannot read alerts"),
        (pub, "sub", "proprio.digest", True, "publisher cannot read the digest"),
        (pub, "pub", "$KV.proprio-state.digest", True, "publisher cannot write KV"),
        (pub, "pub", "$JS.API.STREAM.INFO.KV_proprio-state", True, "publisher cannot use JetStream"),
        (rdr, "sub", "proprio.alert.>", False, "reader reads alerts"),
        (rdr, "pub", "$KV.proprio-state.digest", True, "reader cannot write KV"),
        (rdr, "pub", "os.pulse.compose-probe", True, "reader cannot publish telemetry"),
        (wat, "sub", "proprio.alert.>", False, "watcher reads alerts"),
        (wat, "pub", "os.pulse.compose-probe", True, "watcher cannot publish"),
    ]
    for (user, password), action, subject, refused, what in cases:
        verb = {"sub": "subscribe", "pub": "publish", "jspub": "JetStream-publish"}[action]
        try:
            v = await attempt(user, password, action, subject)
        except Exception as e:  # a connection failure is no evidence either way
            report(False, f"{what}: {user} could not {verb} {subject}: {e!r}")
            continue
        got = bool(v)
        detail = v[0] if v else "no error"
        report(got == refused, f"{what} ({user} {verb} {subject}: {detail})")

    # The KV write attempts changed nothing: the digest is not the probe's.
    errors = []
    nc = await connect(url(a.host, "proprio", a.proprio), errors)
    try:
        kv = await nc.jetstream().key_value("proprio-state")
        try:
            val = (await kv.get("digest")).value
        except Exception:
            val = None
        report(val != b"compose-probe", "KV proprio-state/digest is not the probes' value")
    finally:
        await nc.close()
    return 1 if failed else 0


async def publish(a) -> int:
    """N probe events on os.pulse.<source> as `publisher`, one at a time,
    each acknowledged by the telemetry stream (a JetStream publish: the ack
    comes once the event is stored). One not acknowledged (the server was
    restarting) is published again with the same Nats-Msg-Id until it is:
    the stream's duplicate window stores it once."""
    errors = []
    nc = await connect(url(a.host, "publisher", a.publisher), errors,
                       max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    js = nc.jetstream()
    subject = f"os.pulse.{a.source}"
    period = 1.0 / a.rate
    acked, retried, dup, t0 = 0, 0, 0, time.monotonic()
    for seq in range(a.n):
        ev = {"ts": int(time.time() * 1000), "metrics": {"probe_seq": seq, "cpu": 10}}
        data = msgpack.packb(ev, use_bin_type=True)
        while True:
            try:
                ack = await js.publish(subject, data, timeout=2,
                                       headers={"Nats-Msg-Id": f"{a.source}-{seq}"})
                acked += 1
                dup += bool(ack.duplicate)
                break
            except Exception:
                retried += 1
                await asyncio.sleep(0.25)
        delay = t0 + (seq + 1) * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await nc.close()
    print(json.dumps({"acked": acked, "published_again": retried, "acked_as_duplicate": dup,
                      "seconds": round(time.monotonic() - t0, 1),
                      "reconnects": nc.stats.get("reconnects", 0)}), flush=True)
    return 0


async def count(a) -> int:
    """Distinct probe sequence numbers of os.pulse.<source> in the stream."""
    errors = []
    nc = await connect(url(a.host, "proprio", a.proprio), errors)
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"os.pulse.{a.source}", stream=STREAM)
    seqs, total = set(), 0
    while True:
        try:
            msgs = await sub.fetch(500, timeout=3)
        except (NatsTimeout, asyncio.TimeoutError):
            break
        for m in msgs:
            total += 1
            seqs.add(msgpack.unpackb(m.data, raw=False)["metrics"]["probe_seq"])
            await m.ack()
    await sub.unsubscribe()
    await nc.close()
    missing = [s for s in range(a.n) if s not in seqs]
    print(json.dumps({"stored": total, "distinct": len(seqs), "missing": len(missing),
                      "first_missing": missing[:10], "duplicates": total - len(seqs)}), flush=True)
    return 1 if missing else 0


async def replicas(a) -> int:
    """Every stream proprio created (its KV buckets and object store are
    streams too) has `want` replicas, and all peers current."""
    errors = []
    nc = await connect(url(a.host, "proprio", a.proprio), errors)
    js = nc.jetstream()
    failed, seen = 0, 0
    for s in await js.streams_info():
        seen += 1
        peers = (s.cluster.replicas or []) if s.cluster else []
        current = sum(1 for p in peers if p.current)
        ok = s.config.num_replicas == a.want and len(peers) == a.want - 1 and current == len(peers)
        failed += not ok
        leader = s.cluster.leader if s.cluster else None
        print(f"{'ok  ' if ok else 'FAIL'} {s.config.name}: R{s.config.num_replicas}, "
              f"leader {leader}, {current}/{len(peers)} peers current, {s.state.messages} msgs",
              flush=True)
    await nc.close()
    if seen == 0:
        print("FAIL no streams", flush=True)
    return 1 if failed or seen == 0 else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["perms", "publish", "count", "replicas"])
    p.add_argument("--host", default="127.0.0.1:4222")
    p.add_argument("--proprio", default="proprio-dev-only")
    p.add_argument("--publisher", default="publisher-dev-only")
    p.add_argument("--reader", default="reader-dev-only")
    p.add_argument("--watcher", default="watcher-dev-only")
    p.add_argument("--source", default="compose-probe")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--want", type=int, default=3)
    a = p.parse_args()
    return asyncio.run({"perms": perms, "publish": publish, "count": count,
                        "replicas": replicas}[a.what](a))


if __name__ == "__main__":
    sys.exit(main())
