#!/usr/bin/env python3
"""Generates proprio's wire-contract test vectors (proto/README.md, v1).

Written against the contract, not against proprio's code: payloads are built
here and encoded with Python's `msgpack` and `json`, so the vectors check the
Rust decoder against an independent implementation. Deterministic: running it
again rewrites the same files.

    python3 -m pip install msgpack   # any 1.x
    python3 proto/vectors/gen.py
"""
import json
import math
import os
import struct

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = "os"
T0 = 1767225600000  # 2026-01-01T00:00:00Z, unix ms
NOW = T0 + 123      # the receiver's clock, where a vector needs one
DAY = 24 * 3600 * 1000


def mp(obj, single_float=False):
    return msgpack.packb(obj, use_bin_type=True, use_single_float=single_float).hex()


def js(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def expect(ev):
    """The decoded event, every field spelled out (`key` filled, floats as floats)."""
    out = dict(ev)
    out.setdefault("key", out["source"])
    if "metrics" in out:
        out["metrics"] = {k: float(v) for k, v in out["metrics"].items()}
    if "duration_ms" in out:
        out["duration_ms"] = float(out["duration_ms"])
    return out


# ---------------------------------------------------------------- valid events
# Complete payloads, one per kind, fields in proprio's encoding order so that
# proprio's own encoder must produce the very same MessagePack bytes
# ("canonical": Event::to_msgpack() == msgpack_hex).
FLUX = {"ts": T0, "source": "AitherMind", "kind": "flux", "event": "started", "state": "healthy",
        "attrs": {"boot_s": 1.5, "port": 8088, "version": "2.4.1", "warm": True}}
PULSE = {"ts": T0 + 1000, "source": "AitherMind", "kind": "pulse",
         "metrics": {"cpu_pct": 37.5, "err_rate": 0.002, "latency_p50_ms": 41.0,
                     "latency_p99_ms": 212.25, "mem_mb": 812.0, "rps": 130.0}}
LOG = {"ts": T0 + 2000, "source": "AitherMind", "kind": "log", "key": "AitherMind/http",
       "message": "GET /chat 200 in 41ms req=7f3a9c", "level": "info"}
CHRONICLE = {"ts": T0 + 3000, "source": "AitherVault", "kind": "chronicle", "actor": "admin",
             "action": "rotate_secret", "target": "AitherVault/db", "outcome": "success"}
TRACE = {"ts": T0 + 4000, "source": "Orchestrator", "kind": "trace", "phase": "plan",
         "request": "req-5d1c", "summary": "delegate image request to AitherCanvas",
         "duration_ms": 12.5}
GRAPH = {"ts": T0 + 5000, "source": "ServiceGraph", "kind": "graph", "graph": "ServiceGraph",
         "src": "AitherMind", "rel": "calls", "dst": "AitherVault"}

valid = []


def add(name, subject, ev, *, now_ms=None, canonical=False, file_ok=False, payload=None,
        want=None, single_float=False, note=None):
    v = {"name": name, "subject": subject, "now_ms": now_ms}
    if note:
        v["note"] = note
    v["json"] = js(payload if payload is not None else ev)
    v["msgpack_hex"] = mp(payload if payload is not None else ev, single_float)
    v["canonical"] = canonical
    v["file_ok"] = file_ok
    v["expect"] = want if want is not None else expect(ev)
    valid.append(v)


add("flux", "os.flux.AitherMind.started", FLUX, canonical=True, file_ok=True)
add("pulse", "os.pulse.AitherMind", PULSE, canonical=True, file_ok=True)
add("log", "os.log.AitherMind", LOG, canonical=True, file_ok=True,
    note="explicit key: scored in the context AitherMind/http")
add("chronicle", "os.chronicle.AitherVault", CHRONICLE, canonical=True, file_ok=True)
add("trace", "os.trace.Orchestrator", TRACE, canonical=True, file_ok=True)
add("graph", "os.graph.ServiceGraph", GRAPH, canonical=True, file_ok=True)

# Fields omitted from the payload, filled from the subject.
add("flux-from-subject", "os.flux.AitherMind.degraded",
    None, payload={"ts": T0, "state": "degraded", "attrs": {"reason": "slow upstream"}},
    want=expect({"ts": T0, "source": "AitherMind", "kind": "flux", "event": "degraded",
                 "state": "degraded", "attrs": {"reason": "slow upstream"}}),
    note="kind, source and event come from the subject")
add("pulse-from-subject", "os.pulse.gpu-worker-1",
    None, payload={"ts": T0, "metrics": {"vram_pct": 95.0}},
    want=expect({"ts": T0, "source": "gpu-worker-1", "kind": "pulse", "metrics": {"vram_pct": 95.0}}))
add("log-from-subject", "os.log.AitherMind",
    None, payload={"ts": T0, "message": "OOMKilled", "level": "error"},
    want=expect({"ts": T0, "source": "AitherMind", "kind": "log", "message": "OOMKilled",
                 "level": "error"}))
add("chronicle-from-subject", "os.chronicle.AitherVault",
    None, payload={"ts": T0, "actor": "ci", "action": "deploy", "target": "AitherMind",
                   "outcome": "failure"},
    want=expect({"ts": T0, "source": "AitherVault", "kind": "chronicle", "actor": "ci",
                 "action": "deploy", "target": "AitherMind", "outcome": "failure"}))
add("trace-from-subject", "os.trace.Orchestrator",
    None, payload={"ts": T0, "phase": "perceive", "request": "req-1", "summary": "user asks why chat is slow"},
    want=expect({"ts": T0, "source": "Orchestrator", "kind": "trace", "phase": "perceive",
                 "request": "req-1", "summary": "user asks why chat is slow"}),
    note="duration_ms is optional")
add("graph-from-subject", "os.graph.CodeGraph",
    None, payload={"ts": T0, "src": "chat.handle", "rel": "calls", "dst": "mind.generate"},
    want=expect({"ts": T0, "source": "CodeGraph", "kind": "graph", "graph": "CodeGraph",
                 "src": "chat.handle", "rel": "calls", "dst": "mind.generate"}),
    note="graph from the subject; source defaults to the graph")

# Encoding latitude a publisher may use.
add("pulse-integers-any-order", "os.pulse.AitherMind",
    None, payload={"metrics": {"rps": 130, "mem_mb": 812, "cpu_pct": 37.5}, "ts": T0, "source": "AitherMind"},
    want=expect({"ts": T0, "source": "AitherMind", "kind": "pulse",
                 "metrics": {"rps": 130.0, "mem_mb": 812.0, "cpu_pct": 37.5}}),
    note="integer metrics are numbers too; field order is free")
add("pulse-float32", "os.pulse.AitherMind",
    None, payload={"ts": T0, "metrics": {"cpu_pct": 37.5, "load": 0.25}}, single_float=True,
    want=expect({"ts": T0, "source": "AitherMind", "kind": "pulse",
                 "metrics": {"cpu_pct": 37.5, "load": 0.25}}),
    note="MessagePack float 32 is accepted")
add("unknown-fields-ignored", "os.flux.AitherMind.started",
    None, payload={"ts": T0, "host": "node-3", "extra": {"nested": [1, 2, {"x": None}]}, "v": 2},
    want=expect({"ts": T0, "source": "AitherMind", "kind": "flux", "event": "started"}))
add("payload-wins-over-subject", "os.pulse.AitherMind",
    None, payload={"ts": T0, "source": "AitherMind-2", "metrics": {"cpu_pct": 1.0}},
    want=expect({"ts": T0, "source": "AitherMind-2", "kind": "pulse", "metrics": {"cpu_pct": 1.0}}),
    note="the subject only fills what the payload leaves out")
add("key-equal-to-source", "os.log.AitherMind",
    None, payload={"ts": T0, "source": "AitherMind", "kind": "log", "key": "AitherMind", "message": ""},
    want=expect({"ts": T0, "source": "AitherMind", "kind": "log", "message": ""}),
    file_ok=True, note="an empty log message is allowed")
add("file-label", None,
    None, payload={**PULSE, "metrics": {"latency_p99_ms": 2950.0}, "label": "latency_spike-1"},
    want={**expect({**PULSE, "metrics": {"latency_p99_ms": 2950.0}}), "label": "latency_spike-1"},
    note="event files only: a fault id")
add("file-label-null", None,
    None, payload={**GRAPH, "label": None},
    want=expect(GRAPH), note="label null = normal")

# A raw UTF-8 line on a log subject is a log line; ts is the receiver's clock.
RAW = "2026-01-01T00:00:00Z ERROR OOMKilled: container exceeded memory limit\r\n"
valid.append({"name": "raw-log-line", "subject": "os.log.AitherMind", "now_ms": NOW,
              "note": "not MessagePack, not JSON: the payload is the message; trailing CR/LF dropped",
              "raw_hex": RAW.encode().hex(), "canonical": False, "file_ok": False,
              "expect": expect({"ts": NOW, "source": "AitherMind", "kind": "log",
                                "message": RAW.rstrip("\r\n")})})

# -------------------------------------------------------------- invalid events
invalid = []


def bad(name, reason, subject=None, *, json_obj=None, text=None, hex_=None, raw_hex=None, now_ms=None,
        note=None, pad_to=None):
    v = {"name": name, "reason": reason, "subject": subject, "now_ms": now_ms}
    if note:
        v["note"] = note
    if json_obj is not None:
        v["json"] = js(json_obj)
    if text is not None:
        v["text"] = text
    if hex_ is not None:
        v["msgpack_hex"] = hex_
    if raw_hex is not None:
        v["raw_hex"] = raw_hex
    if pad_to is not None:
        v["pad_to"] = pad_to
    invalid.append(v)


P = "os.pulse.AitherMind"
bad("too-large", "too_large", P, json_obj={"ts": T0, "metrics": {"cpu_pct": 1.0}}, pad_to=65537,
    note="the JSON padded with trailing spaces to 65537 bytes (65536 is accepted)")
bad("not-a-map", "decode", P, hex_=mp([T0, "AitherMind", {"cpu_pct": 1.0}]),
    note="a MessagePack array is not an event")
bad("empty-payload", "decode", P, raw_hex="")
bad("json-syntax", "decode", P, text='{"ts": %d, "metrics": {"cpu_pct": 1.0' % T0)
bad("json-wrong-type", "decode", P, json_obj={"ts": "yesterday", "metrics": {"cpu_pct": 1.0}})
bad("json-float-ts", "decode", P, json_obj={"ts": T0 + 0.5, "metrics": {"cpu_pct": 1.0}},
    note="ts is an integer")
bad("msgpack-wrong-type", "decode", P, hex_=mp({"ts": T0, "metrics": {"cpu_pct": "high"}}))
bad("msgpack-truncated", "decode", P, hex_=mp({"ts": T0, "metrics": {"cpu_pct": 1.0}})[:-6])
bad("attr-not-scalar", "decode", "os.flux.AitherMind.started",
    json_obj={"ts": T0, "attrs": {"deps": ["AitherVault"]}})
bad("json-deep-nesting", "decode", "os.flux.AitherMind.started",
    text='{"ts": %d, "attrs": {"x": %s%s}}' % (T0, "[" * 200, "]" * 200),
    note="an attribute is a scalar; nesting is not, however deep")
deep = b"\x83" + msgpack.packb("ts") + msgpack.packb(T0) + msgpack.packb("metrics") + \
    msgpack.packb({"cpu_pct": 1.0}) + msgpack.packb("x") + b"\x91" * 2000 + b"\x90"
bad("msgpack-deep-nesting", "decode", P, hex_=deep.hex(), note="nesting deeper than 1024 levels")
bad("raw-log-not-utf8", "invalid_utf8", "os.log.AitherMind", now_ms=NOW, raw_hex="4f4f4d ff fe 0a".replace(" ", ""),
    note="a raw log line must be UTF-8")
bad("msgpack-string-not-utf8", "invalid_utf8", P,
    hex_=(b"\x83" + msgpack.packb("ts") + msgpack.packb(T0) + msgpack.packb("source") + b"\xa2\xff\xfe"
          + msgpack.packb("metrics") + msgpack.packb({"cpu_pct": 1.0})).hex())
bad("pulse-without-metrics", "missing_field", P, json_obj={"ts": T0})
bad("pulse-empty-metrics", "missing_field", P, json_obj={"ts": T0, "metrics": {}})
bad("without-ts", "missing_field", P, json_obj={"metrics": {"cpu_pct": 1.0}})
bad("file-without-kind", "missing_field", None, json_obj={"ts": T0, "source": "a", "message": "x"})
bad("file-flux-without-event", "missing_field", None, json_obj={"ts": T0, "source": "a", "kind": "flux"})
bad("file-graph-without-dst", "missing_field", None,
    json_obj={"ts": T0, "kind": "graph", "graph": "ServiceGraph", "src": "a", "rel": "calls"})
bad("empty-source", "missing_field", P, json_obj={"ts": T0, "source": "", "metrics": {"cpu_pct": 1.0}})
bad("chronicle-without-outcome", "missing_field", "os.chronicle.AitherVault",
    json_obj={"ts": T0, "actor": "a", "action": "b", "target": "c"})
bad("file-unknown-kind", "unknown_kind", None, json_obj={"ts": T0, "source": "a", "kind": "metric"},
    note="on a subject, a kind other than the subject's is bad_subject")
bad("metric-nan", "bad_value", P, hex_=mp({"ts": T0, "metrics": {"cpu_pct": math.nan}}))
bad("metric-inf", "bad_value", P, hex_=mp({"ts": T0, "metrics": {"cpu_pct": -math.inf}}))
bad("attr-nan", "bad_value", "os.flux.AitherMind.started", hex_=mp({"ts": T0, "attrs": {"x": math.nan}}))
bad("unknown-phase", "bad_value", "os.trace.Orchestrator",
    json_obj={"ts": T0, "phase": "dream", "request": "r", "summary": "s"})
bad("negative-duration", "bad_value", "os.trace.Orchestrator",
    json_obj={"ts": T0, "phase": "act", "request": "r", "summary": "s", "duration_ms": -1})
bad("source-too-long", "too_long", P, json_obj={"ts": T0, "source": "s" * 129, "metrics": {"cpu_pct": 1.0}},
    note="names: 128 bytes")
bad("message-too-long", "too_long", "os.log.AitherMind", json_obj={"ts": T0, "message": "m" * 4097},
    note="free text: 4096 bytes")
bad("raw-log-too-long", "too_long", "os.log.AitherMind", text="m" * 4097, now_ms=NOW)
bad("metric-name-too-long", "too_long", P, json_obj={"ts": T0, "metrics": {"m" * 129: 1.0}})
bad("too-many-metrics", "too_many", P,
    hex_=mp({"ts": T0, "metrics": {"m%02d" % i: float(i) for i in range(65)}}), note="at most 64")
bad("too-many-attrs", "too_many", "os.flux.AitherMind.started",
    json_obj={"ts": T0, "attrs": {"a%02d" % i: i for i in range(65)}})
bad("negative-ts", "bad_timestamp", P, json_obj={"ts": -1, "metrics": {"cpu_pct": 1.0}})
bad("ts-in-the-future", "bad_timestamp", P, now_ms=NOW,
    json_obj={"ts": NOW + 7 * DAY + 1, "metrics": {"cpu_pct": 1.0}},
    note="live traffic: more than 7 days from the receiver's clock")
bad("ts-too-old", "bad_timestamp", P, now_ms=NOW,
    json_obj={"ts": NOW - 7 * DAY - 1, "metrics": {"cpu_pct": 1.0}})
bad("subject-extra-token", "bad_subject", "os.pulse.AitherMind.cpu", json_obj={"ts": T0, "metrics": {"cpu_pct": 1.0}})
bad("subject-wrong-root", "bad_subject", "telemetry.pulse.AitherMind", json_obj={"ts": T0, "metrics": {"cpu_pct": 1.0}})
bad("subject-unknown-kind", "bad_subject", "os.metric.AitherMind", json_obj={"ts": T0, "metrics": {"cpu_pct": 1.0}})
bad("flux-subject-without-event", "bad_subject", "os.flux.AitherMind", json_obj={"ts": T0, "event": "started"})
bad("graph-subject-extra-token", "bad_subject", "os.graph.ServiceGraph.x",
    json_obj={"ts": T0, "src": "a", "rel": "calls", "dst": "b"})
bad("kind-differs-from-subject", "bad_subject", P,
    json_obj={"ts": T0, "kind": "log", "message": "hello"})

# ------------------------------------------------------------ alert and digest
ALERT = {
    "id": "PROPRIO_TELEMETRY:48213", "ts": T0 + 60000, "source": "AitherMind", "key": "AitherMind",
    "kind": "pulse", "score": 3.5, "loss": 2.75,
    "baseline": {"median": 0.8125, "scale": 0.5625, "of": "key"},
    "rendered": "<|BOE|><|PULSE|><|SVC|>AitherMind<|METRIC|>latency_p99_ms=2.9k<|EOE|>",
    "span": {"text": "2.9k", "start": 29, "end": 33, "loss": 6.25},
    "diagnosis": "latency spike", "model": "20260101T060000Z-3f2a9c1e", "reason": "surprise",
}
SILENCE = {
    "id": "silence:AitherVault:1767225600000", "ts": T0 + 600000, "source": "AitherVault",
    "key": "AitherVault", "kind": "pulse", "score": 12.0, "loss": 0.0,
    "baseline": {"median": 0.0, "scale": 0.0, "of": "none"},
    "rendered": "<|BOE|><|SILENCE|><|SVC|>AitherVault<|EOE|>",
    "span": {"text": "<|SILENCE|>", "start": 1, "end": 2, "loss": 0.0},
    "diagnosis": None, "model": None, "reason": "silence",
}
TOPOLOGY = {
    "id": "edge:PROPRIO_TELEMETRY:90210", "ts": T0 + 3600000, "source": "AitherNotebook",
    "key": "ServiceGraph", "kind": "graph", "score": 3.5, "loss": 0.0,
    "baseline": {"median": 0.0, "scale": 0.0, "of": "none"},
    "rendered": "AitherNotebook calls AitherAdmin",
    "span": {"text": "", "start": 0, "end": 0, "loss": 0.0},
    "diagnosis": "new dependency: AitherNotebook calls AitherAdmin (never seen before)",
    "model": None, "reason": "topology",
}
alerts = {
    "version": 1,
    "note": "alert floats are 32-bit; proprio's encoder emits exactly msgpack_hex",
    "vectors": [
        {"name": "surprise", "subject": "proprio.alert.AitherMind", "alert": ALERT,
         "json": js(ALERT), "msgpack_hex": mp(ALERT, single_float=True)},
        {"name": "silence", "subject": "proprio.alert.AitherVault", "alert": SILENCE,
         "json": js(SILENCE), "msgpack_hex": mp(SILENCE, single_float=True)},
        {"name": "topology", "subject": "proprio.alert.AitherNotebook", "alert": TOPOLOGY,
         "json": js(TOPOLOGY), "msgpack_hex": mp(TOPOLOGY, single_float=True)},
    ],
}

DIGEST = {
    "state": "trained", "loss": 0.82, "anomalies_24h": 3,
    "recent": [{"source": "", "what": "GPU VRAM 95%", "score": 2.8},
               {"source": "AitherMind", "what": "latency spike", "score": 3.4}],
    "model": "20260101T060000Z-3f2a9c1e", "ts": T0 + 21600000,
}
WARMING = {"state": "warming", "loss": None, "anomalies_24h": 0, "recent": [], "model": None, "ts": T0}
digests = {
    "version": 1,
    "note": "digest floats are 32-bit; proprio's encoder emits exactly msgpack_hex",
    "vectors": [
        {"name": "trained", "digest": DIGEST, "json": js(DIGEST), "msgpack_hex": mp(DIGEST, single_float=True),
         "text": "[OS BASELINE]\n"
                 "baseline: trained (loss=0.82), 3 anomalies in 24h\n"
                 "recent: AitherMind latency spike (score=3.4), GPU VRAM 95% (score=2.8)\n"
                 "[/OS BASELINE]"},
        {"name": "warming", "digest": WARMING, "json": js(WARMING), "msgpack_hex": mp(WARMING, single_float=True),
         "text": "[OS BASELINE]\nbaseline: warming (no model yet)\nrecent: none\n[/OS BASELINE]"},
    ],
}

# An incident: field order is proprio's (Incident, then Suspect), floats 32-bit.
# Ranks are illustrative values, not recomputed from the formula.
INCIDENT_OPEN = {
    "id": "inc-1767225600000-8c1d2f3a", "state": "open",
    "opened_ts": T0, "updated_ts": T0 + 120000, "confirmed_ts": T0 + 60000, "resolved_ts": None,
    "score": 6.5, "alerts": 4,
    "suspects": [
        {"source": "AitherPostgres", "rank": 0.9375, "onset_ts": T0, "score": 5.5, "alerts": 2,
         "what": "dependency unreachable"},
        {"source": "AitherMind", "rank": 0.5, "onset_ts": T0 + 60000, "score": 6.5, "alerts": 1,
         "what": "latency spike"},
        {"source": "AitherCanvas", "rank": 0.25, "onset_ts": T0 + 120000, "score": 3.25, "alerts": 1,
         "what": "silence"},
    ],
    "sources": ["AitherPostgres", "AitherMind", "AitherCanvas"],
    "alert_ids": ["PROPRIO_TELEMETRY:48213", "PROPRIO_TELEMETRY:48240", "PROPRIO_TELEMETRY:48502",
                  "silence:AitherCanvas:1767225690000"],
}
INCIDENT_RESOLVED = {
    "id": "inc-1767229200000-0b7e44d1", "state": "resolved",
    "opened_ts": T0 + 3600000, "updated_ts": T0 + 3600000, "confirmed_ts": T0 + 3600000,
    "resolved_ts": T0 + 4200000,
    "score": 12.0, "alerts": 1,
    "suspects": [{"source": "AitherVault", "rank": 1.0, "onset_ts": T0 + 3600000, "score": 12.0,
                  "alerts": 1, "what": "silence"}],
    "sources": ["AitherVault"],
    "alert_ids": ["silence:AitherVault:1767229170000"],
}
# Pending: not yet confirmed, so only ever in the incidents KV (never on
# the stream), and without confirmed_ts.
INCIDENT_PENDING = {
    "id": "inc-1767232800000-5a90c3e2", "state": "pending",
    "opened_ts": T0 + 7200000, "updated_ts": T0 + 7210000, "resolved_ts": None,
    "score": 5.25, "alerts": 2,
    "suspects": [{"source": "AitherScout", "rank": 1.0, "onset_ts": T0 + 7200000, "score": 5.25,
                  "alerts": 2, "what": "state=degraded"}],
    "sources": ["AitherScout"],
    "alert_ids": ["PROPRIO_TELEMETRY:90211", "PROPRIO_TELEMETRY:90377"],
}
incidents = {
    "version": 1,
    "note": "incident floats are 32-bit; proprio's encoder emits exactly msgpack_hex; "
            "msg_id is the Nats-Msg-Id of the state on stream PROPRIO_INCIDENTS",
    "vectors": [
        {"name": name, "subject": "proprio.incident." + inc["id"], "kv_key": inc["id"],
         "msg_id": "%s:%d:%s" % (inc["id"], inc["alerts"], inc["state"]),
         "incident": inc, "json": js(inc), "msgpack_hex": mp(inc, single_float=True)}
        for name, inc in [("open", INCIDENT_OPEN), ("resolved", INCIDENT_RESOLVED),
                          ("pending", INCIDENT_PENDING)]
    ],
}


def write(name, obj):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


head = {"version": 1, "root": ROOT,
        "generated_by": "proto/vectors/gen.py with Python msgpack %s" % ".".join(map(str, msgpack.version))}
write("events.json", {**head, "vectors": valid})
write("invalid.json", {**head, "vectors": invalid})
write("alert.json", alerts)
write("digest.json", digests)
write("incident.json", incidents)
print("events: %d valid, %d invalid; %d alerts, 2 digests, 3 incidents" % (len(valid), len(invalid), len(alerts["vectors"])))
