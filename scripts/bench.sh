#!/usr/bin/env bash
# The engine's benchmark: `proprio bench` and the PyTorch-eager reference of
# the identical model (scripts/bench_ref.py), run one after the other on this
# machine with the same threads and allocator settings, then one table with
# the ratios (ours / PyTorch). Installs what `import torch` needs into
# .tools/venv on first use (idempotent).
#
#   scripts/bench.sh                 # defaults: 2 threads, median of 3 runs
#   THREADS=1 RUNS=5 scripts/bench.sh
#   TRAIN_STEPS=0 scripts/bench.sh   # scoring only
#   TCH_ENGINE=0 scripts/bench.sh    # skip proprio's libtorch scoring engine
#   PROPRIO_BIN=/tmp/old/proprio scripts/bench.sh   # another build of proprio (before/after)
#
# Figures are only comparable on an otherwise idle machine. On a busy one,
# libgomp's spinning threads (both libtorch and PyTorch use them) make
# 2-thread training 10-15x slower on both sides; OMP_WAIT_POLICY=PASSIVE
# (passed through to both) keeps the comparison meaningful.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export LIBTORCH="${LIBTORCH:-$root/.tools/libtorch}"
py="$root/.tools/venv/bin/python"
threads="${THREADS:-2}"
runs="${RUNS:-3}"
steps="${TRAIN_STEPS:-500}"
events="${EVENTS:-4096}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

[ -x "$py" ] || bash scripts/setup.sh

# torch is installed with --no-deps (only its CPU libraries are linked into
# proprio); importing it from Python needs its pure-Python deps and the CUDA
# runtime wheels its extension module links against, even on a CPU.
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "bench: installing what 'import torch' needs into .tools/venv" >&2
  pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
  pip install typing-extensions sympy filelock networkx jinja2 fsspec
  if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    pip install "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3" \
      "nvidia-cudnn-cu13==9.20.0.48" "nvidia-cusparselt-cu13==0.8.1" "nvidia-nccl-cu13==2.29.7" "nvidia-nvshmem-cu13==3.4.5"
  fi
  "$py" -c 'import torch' 2>/dev/null || { echo "bench: 'import torch' still fails:" >&2; "$py" -c 'import torch'; exit 1; }
fi

# Both sides keep freed memory (glibc would otherwise hand it back and
# re-fault it on every call); proprio also sets this itself via mallopt.
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000

args=(--json --threads "$threads" --runs "$runs" --train-steps "$steps" --events "$events")
ours=("${args[@]}")
[ "${TCH_ENGINE:-1}" = 0 ] || ours+=(--libtorch)
bin="${PROPRIO_BIN:-target/release/proprio}"
[ -n "${PROPRIO_BIN:-}" ] || cargo build --release -q
"$bin" bench "${ours[@]}" >"$out/ours.json"
vocab="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$out/ours.json")"
"$py" scripts/bench_ref.py "${args[@]}" --vocab "$vocab" 2>/dev/null >"$out/ref.json"

"$py" - "$out/ours.json" "$out/ref.json" <<'PY'
import json, sys
ours, ref = (json.load(open(p)) for p in sys.argv[1:3])
print(f"proprio bench vs {ref['implementation']}: {ours['params']} params, vocab {ours['vocab_size']}, "
      f"{ours['event_tokens']}-token events, {ours['threads']} threads, native scorer on {ours['simd']}, "
      f"median of runs")
rows = []
def row(name, a, b, unit, higher_better=True, fmt="{:,.0f}"):
    ratio = (a / b) if higher_better else (b / a)
    rows.append((name, fmt.format(a) + unit, fmt.format(b) + unit, f"{ratio:.2f}x"))
theirs = {f["batch"]: f for f in ref["score"]}
for f in ours["score"]:
    if f["engine"] != "native" or f["batch"] not in theirs:
        continue
    t = theirs[f["batch"]]
    row(f"events/s, batch {f['batch']}", f["events_per_s"], t["events_per_s"], "")
    if f["batch"] == 1:
        row("latency p50, batch 1", f["p50_us"], t["p50_us"], " us", False, "{:,.1f}")
best_o = max((f for f in ours["score"] if f["engine"] == "native"), key=lambda f: f["events_per_s"])
best_t = max(ref["score"], key=lambda f: f["events_per_s"])
row(f"best events/s (b{best_o['batch']} vs b{best_t['batch']})", best_o["events_per_s"], best_t["events_per_s"], "")
for f in ours["score"]:
    if f["engine"] == "libtorch" and f["batch"] in theirs:
        row(f"  (proprio's libtorch engine, batch {f['batch']})", f["events_per_s"], theirs[f["batch"]]["events_per_s"], "")
if ours.get("train_step_s") and ref.get("train_step_s"):
    row("training, ms/step 32x128", ours["train_step_s"] * 1e3, ref["train_step_s"] * 1e3, " ms", False, "{:.1f}")
    row(f"training, {ours['train_steps']} steps", ours["train_total_s"], ref["train_total_s"], " s", False, "{:.2f}")
row("RSS after scoring", ours["score_rss_mb"], ref["score_rss_mb"], " MB", False)
row("peak RSS (with training)", ours["hwm_mb"], ref["hwm_mb"], " MB", False)
w = [max(len(r[i]) for r in rows + [("", "proprio", "pytorch", "ratio")]) for i in range(4)]
print(f"{'':<{w[0]}}  {'proprio':>{w[1]}}  {'pytorch':>{w[2]}}  {'ratio':>{w[3]}}")
for r in rows:
    print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}")
print("ratio > 1: proprio is better (faster, or less memory)")
d = ours.get("decision")
if d:
    b1 = next((f for f in ours["score"] if f["engine"] == "native" and f["batch"] == 1), None)
    print(f"decision + incidents (live code, {d['events']:,} simulated events, {d['alerts']:,} alerts, "
          f"{d['incidents']} incidents): per event p50 {d['p50_us']:.1f} us, p99 {d['p99_us']:.1f} us, "
          f"alerting events p99 {d['alert_p99_us']:.1f} us"
          + (f"; p99 = {d['p99_us'] / b1['p50_us']:.2f}x scoring one event (batch 1 p50)" if b1 else ""))
PY
