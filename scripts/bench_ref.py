#!/usr/bin/env python3
"""PyTorch-eager reference for `proprio bench`.

The identical model (src/model/gpt.rs: nanoGPT-style, token + learned position
embeddings, pre-LayerNorm blocks with causal attention and a 4x exact-GELU
MLP, final LayerNorm, head tied to the token embedding, biases everywhere) and
the identical measurement (src/model/bench.rs): events of random tokens without
context scored at each batch size (mean cross-entropy over event[1:], per-token
losses kept), and training steps of 32 windows x 128 tokens with AdamW and
gradient clipping. This is how one would write it in PyTorch: SDPA, the full
logits, then cross-entropy, under inference_mode; one training step on the
whole batch with torch's intra-op threads. proprio computes the same arithmetic
in its own way (attention written out in causal query blocks, the batch split
over threads); that is what the ratio measures. Prints a table, or one JSON object
(--json) with the same keys as `proprio bench --json`.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def attn(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, c=32, n_layer=2, n_head=4, block_size=128):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block_size, c)
        self.h = nn.ModuleList(Block(c, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(c)
        # nanoGPT's init: normal(0, 0.02), residual projections / sqrt(2 n_layer).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))  # (B, T, C)
        for blk in self.h:
            x = blk(x)
        return self.ln_f(x) @ self.wte.weight.t()  # (B, T, V), head tied


def score(model, idx):
    """Per-event mean loss (as a list) and per-token losses, like proprio's score()."""
    with torch.inference_mode():
        logits = model(idx)
        b, t, v = logits.shape
        tok = F.cross_entropy(logits[:, :-1].reshape(-1, v), idx[:, 1:].reshape(-1), reduction="none").view(b, t - 1)
        return tok.mean(1).tolist(), tok


def memory_mb():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out.get("VmRSS", float("nan")), out.get("VmHWM", float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--event-tokens", type=int, default=64)
    ap.add_argument("--events", type=int, default=4096)
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--vocab", type=int, required=True, help="proprio's VOCAB_SIZE")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    model = GPT(a.vocab).eval()
    g = torch.Generator().manual_seed(7)
    events = torch.randint(0, a.vocab, (a.events, a.event_tokens), generator=g)

    figures = []
    for b in [int(x) for x in a.batches.split(",")]:
        chunks = list(events.split(b))

        def measure():
            calls = []
            t0 = time.perf_counter()
            for c in chunks:
                t = time.perf_counter()
                score(model, c)
                calls.append(time.perf_counter() - t)
            return a.events / (time.perf_counter() - t0), calls

        measure()  # warm-up
        runs = sorted((measure() for _ in range(a.runs)), key=lambda r: r[0])
        eps, calls = runs[len(runs) // 2]
        calls.sort()
        pct = lambda q: calls[round((len(calls) - 1) * q)] * 1e6
        figures.append(dict(engine="pytorch", batch=b, events_per_s=eps, p50_us=pct(0.5), p99_us=pct(0.99)))
    score_rss, score_hwm = memory_mb()

    train_step_s = train_total_s = None
    if a.train_steps > 0:
        n, bs, t = 200_000, 32, 128
        stream = torch.randint(0, a.vocab, (n,), generator=g)
        starts = torch.arange(0, n - t - 1, 64)
        ar = torch.arange(t + 1)

        def once(steps):
            torch.manual_seed(1)
            m = GPT(a.vocab).train()
            decay = [p for p in m.parameters() if p.dim() >= 2]
            plain = [p for p in m.parameters() if p.dim() < 2]
            opt = torch.optim.AdamW(
                [dict(params=decay, weight_decay=0.1), dict(params=plain, weight_decay=0.0)],
                lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
            )
            t0 = time.perf_counter()
            for _ in range(steps):
                w = stream[starts[torch.randint(0, len(starts), (bs,), generator=g)][:, None] + ar]  # (B, T+1)
                x, y = w[:, :-1], w[:, 1:]
                logits = m(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
                loss.item()
            return time.perf_counter() - t0

        once(min(20, a.train_steps))  # warm-up
        times = sorted(once(a.train_steps) for _ in range(a.runs))
        train_total_s = times[len(times) // 2]
        train_step_s = train_total_s / a.train_steps
    rss, hwm = memory_mb()

    report = dict(
        implementation=f"pytorch-eager {torch.__version__}",
        threads=a.threads,
        vocab_size=a.vocab,
        event_tokens=a.event_tokens,
        params=sum(p.numel() for p in model.parameters()),
        score=figures,
        train_step_s=train_step_s,
        train_total_s=train_total_s,
        train_steps=a.train_steps,
        score_rss_mb=score_rss,
        score_hwm_mb=score_hwm,
        rss_mb=rss,
        hwm_mb=hwm,
    )
    if a.json:
        print(json.dumps(report))
        return
    print(f"{report['implementation']}: {report['params']} params, vocab {a.vocab}, {a.threads} threads")
    for f in figures:
        print(f"batch {f['batch']:>4}: {f['events_per_s']:>9.0f} events/s  p50 {f['p50_us']:.1f} us  p99 {f['p99_us']:.1f} us")
    if train_total_s:
        print(f"training: {train_step_s * 1e3:.1f} ms/step, {a.train_steps} steps in {train_total_s:.2f} s")
    print(f"memory: after scoring RSS {score_rss:.0f} MB; after training RSS {rss:.0f} MB (peak {hwm:.0f} MB)")


if __name__ == "__main__":
    main()
