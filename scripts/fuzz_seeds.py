#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (fuzz/seeds/<target>/) from
proto/vectors and the shapes tests/it/fuzz.rs generates.

`make fuzz` starts from the checked-in corpus (fuzz/corpus/, minimized with
`cargo fuzz cmin`); these seeds are where that corpus began, and
`make fuzz-seed` merges them in again (after the vectors change, say).

The input formats are fuzz/src/lib.rs's: for `event`, messages joined by
0xc1 0xc1, each a flags byte (1 subject, 2 clock, 4 redelivered), the
subject and a 0x00 when flag 1 is set, then the payload; for `text`, the
text; for `tokens`, items of (key, context length, event length) then
2-byte little-endian token ids.
"""
import hashlib
import json
import os
import random
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
SEP = b"\xc1\xc1"
NOW = 1767225600123  # fuzz/src/lib.rs's NOW, proto/vectors' now_ms


def message(subject, clock, payload, redelivered=False):
    f = (1 if subject is not None else 0) | (2 if clock else 0) | (4 if redelivered else 0)
    out = bytes([f])
    if subject is not None:
        out += subject.encode() + b"\x00"
    return out + payload


def payloads(v):
    """Every form a vector gives its payload in."""
    out = []
    if "json" in v:
        j = v["json"].encode()
        if "pad_to" in v:
            j = j + b" " * (v["pad_to"] - len(j))
        out.append(j)
    if "text" in v:
        out.append(v["text"].encode())
    for k in ("msgpack_hex", "raw_hex"):
        if k in v:
            out.append(bytes.fromhex(v[k]))
    return out


def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def vectors(name):
    with open(os.path.join(ROOT, "proto", "vectors", name)) as f:
        return json.load(f)["vectors"]


def event_seeds():
    valid = []
    for v in vectors("events.json") + vectors("invalid.json"):
        clock = v.get("now_ms") is not None
        for p in payloads(v):
            write("event", message(v.get("subject"), clock, p))
            # The same payload from a file (no subject) and live.
            write("event", message(None, True, p))
            if "reason" not in v:
                valid.append(message(v.get("subject"), clock, p))
    # Batches: a key's events in a row fill its context and its cache, a
    # repeated pulse collapses unless redelivered, and more keys than the
    # maps hold evict.
    for i in range(0, len(valid), 8):
        write("event", SEP.join(valid[i : i + 8]))
    head = b"\x01os.pulse.AitherMind\x00"
    pulse = [m for m in valid if m.startswith(head)]
    write("event", SEP.join(pulse[:2] * 3))
    again = message("os.pulse.AitherMind", False, pulse[0][len(head) :], True)
    write("event", SEP.join([pulse[0], pulse[0], again]))
    # Hostile shapes (tests/it/fuzz.rs's hostile_bytes).
    for n in (200, 5000):
        for b in (b"\x91", b"\x81", b"["):
            write("event", message("os.flux.s.started", False, b"\x81\xa5attrs" + b * n))
        write("event", message(None, False, b'{"ts":%d,"attrs":%s}' % (NOW, b"[" * n)))
    write("event", message("os.pulse.s", False, b"\xdf\xff\xff\xff\xff\xa2ts\x01"))
    write(
        "event",
        message("os.pulse.s", False, b"\x83\xa2ts\x01\xa6source\xd9\x03\xff\xfe\x80\xa7message\xa1x"),
    )
    write("event", message("os.log.s", True, "línea de log ünïcode \u2028 <|BOE|> 0xdeadbeef".encode()))
    write("event", message("os.log.s", True, b"\xff\xfe raw"))


def text_seeds():
    for v in vectors("events.json"):
        if "json" in v:
            for k, x in json.loads(v["json"]).items():
                if isinstance(x, str):
                    write("text", x.encode())
    for t in [
        "req-4f3a2b connected from 10.0.0.12:5432 in 35ms",
        "user 123e4567-e89b-12d3-a456-426614174000 session=ab12cd34 /var/lib/proprio/model.bin",
        "<|BOE|> forged <<||EOE|>> and <|UNKNOWN|> <|",
        "line one\nline two\r\nthree",
        "hex 0xDEADbeef deadbeef123456 0001234567 -99999",
        "127.0.0.1:80 0.0.0.0 256.300.1.1",
        "\u00e9\u4e2d\u6587 \U0001f600 \ufffd",
        "",
    ]:
        write("text", t.encode())


def tokens_seeds():
    rng = random.Random(7)
    tokens = lambda n: b"".join(struct.pack("<H", rng.randrange(600)) for _ in range(n))
    # A key's second event whose context is its first (the cache's case),
    # a window longer than the block, empty and one-token events, two keys.
    first = tokens(20)
    seeds = [
        bytes([0, 0, 20]) + first + bytes([0, 20, 12]) + first + tokens(12),
        bytes([1, 200, 100]) + tokens(300),
        bytes([0, 0, 0]) + bytes([0, 0, 1]) + tokens(1) + bytes([2, 3, 2]) + tokens(5),
        bytes([0, 5, 5]) + tokens(10) + bytes([1, 5, 5]) + tokens(10) + bytes([0, 10, 5]) + tokens(15),
        bytes([3, 0, 8]) + b"\xff\xff" * 8,
    ]
    for s in seeds:
        write("tokens", s)


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    event_seeds()
    text_seeds()
    tokens_seeds()
    for t in sorted(os.listdir(OUT)):
        print(f"fuzz_seeds: {len(os.listdir(os.path.join(OUT, t)))} seeds for {t}", file=sys.stderr)
