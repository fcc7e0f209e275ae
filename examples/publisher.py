#!/usr/bin/env python3
"""A service publishing telemetry for proprio: MessagePack events on NATS.

What any service does to be watched by proprio: publish what it already
knows about itself on the telemetry subjects (proto/README.md):

    os.pulse.<source>            metrics          {"ts", "metrics": {...}}
    os.log.<source>              a log line       {"ts", "level", "message"}
    os.flux.<source>.<event>     a state change   {"ts", "state", "attrs"}

This example plays a few services: a normal stretch (optionally backdated,
so a model can be trained on it at once), then live traffic, then, with
--fault, one event unlike anything before (an OOM kill), then silence.

    pip install nats-py msgpack
    NATS_URL=nats://publisher:secret@127.0.0.1:4222 python examples/publisher.py --fault

Credentials: in the URL (nats://user:password@host:4222), or --creds FILE
(a JWT credentials file), or none on an open server.
"""

import argparse
import asyncio
import os
import random
import time

import msgpack
import nats

ROOT = os.environ.get("PROPRIO_NATS_ROOT", "os")


def now_ms() -> int:
    return int(time.time() * 1000)


def pack(event: dict) -> bytes:
    # A MessagePack map with named fields: the preferred encoding.
    return msgpack.packb(event, use_bin_type=True)


class Service:
    """One service's normal rhythm: a pulse, a log line and a heartbeat."""

    def __init__(self, name: str, rng: random.Random):
        self.name = name
        self.rng = rng
        self.requests = 0

    def round(self, ts: int):
        """The (subject, event) pairs of one round at `ts`."""
        r = self.rng
        self.requests += 1
        cpu = 20 + r.randint(0, 4)
        yield f"{ROOT}.pulse.{self.name}", {
            "ts": ts,
            "metrics": {"cpu": cpu, "mem_mb": 512, "req_rate": 40},
        }
        yield f"{ROOT}.log.{self.name}", {
            "ts": ts + 1,
            "level": "info",
            "message": f"GET /health 200 in {3 + r.randint(0, 3)}ms req-{r.getrandbits(32):x}",
        }
        yield f"{ROOT}.flux.{self.name}.heartbeat", {"ts": ts + 2, "state": "healthy"}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", help="NATS credentials file (JWT + NKey seed)")
    p.add_argument("--services", type=int, default=6, help="how many services to play")
    p.add_argument("--backfill", type=int, default=0,
                   help="rounds of normal traffic first, backdated one second apart (a training set, at once)")
    p.add_argument("--live", type=float, default=5.0, help="seconds of live normal traffic")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between live rounds")
    p.add_argument("--fault", action="store_true",
                   help="then publish one OOM kill on svc3 (an event unlike any before)")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()

    opts = {"servers": a.nats.split(","), "name": "example-publisher"}
    if a.creds:
        opts["user_credentials"] = a.creds
    nc = await nats.connect(**opts)
    rng = random.Random(a.seed)
    services = [Service(f"svc{i}", rng) for i in range(a.services)]
    sent = 0

    # Normal telemetry, backdated: what the model learns "normal" from.
    if a.backfill:
        t0 = now_ms() - a.backfill * 1000 - 5_000
        for i in range(a.backfill):
            for j, s in enumerate(services):
                for subject, ev in s.round(t0 + i * 1000 + j):
                    await nc.publish(subject, pack(ev))
                    sent += 1
        await nc.flush()
        print(f"backfilled {sent} events from {len(services)} services", flush=True)

    # Live normal traffic.
    deadline = time.monotonic() + a.live
    while time.monotonic() < deadline:
        for s in services:
            for subject, ev in s.round(now_ms()):
                await nc.publish(subject, pack(ev))
                sent += 1
        await nc.flush()
        await asyncio.sleep(a.interval)

    if a.fault:
        oom = {
            "ts": now_ms(),
            "level": "fatal",
            "message": "Memory cgroup out of memory: OOMKilled process 4242 (python3) total-vm:8123456kB",
        }
        await nc.publish(f"{ROOT}.log.svc3", pack(oom))
        sent += 1
        print(f"published an OOM kill on {ROOT}.log.svc3", flush=True)

    await nc.flush()
    await nc.drain()
    print(f"published {sent} events", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
