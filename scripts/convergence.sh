#!/usr/bin/env bash
# Does training converge within 500 steps on a simulated day? (issue 3)
#
#   bash scripts/convergence.sh        (or `make convergence`; not part of `make test`)
#
# Simulates a fault-free day (203 services, seed 1) and two hours with every
# fault type (seed 7), trains one model per step count from scratch with the
# same settings, and prints for each: the final validation loss (the newest
# 10 % of every key, never trained on), the wall time, and the detection
# AUROC of the model's z-score on the faulty hours. Then the criterion:
# validation loss after the shortest run within 5 % of the longest run's.
#
# Environment (all optional):
#   STEPS    step counts to compare ["500 2000"]
#   BATCH    windows per step [TrainConfig's, 32]
#   LR       peak learning rate [TrainConfig's, 0.01]
#   THREADS  libtorch threads [2]
#   OUT      where inputs, checkpoints and reports go [target/convergence]
# A step count whose report exists is not trained again (delete OUT to redo).
set -euo pipefail
main() {
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${STEPS:-500 2000}"
THREADS="${THREADS:-2}"
OUT="${OUT:-target/convergence}"
P="$ROOT/target/release/proprio"
mkdir -p "$OUT"
extra=()
[[ -n "${BATCH:-}" ]] && extra+=(--batch-size "$BATCH")
[[ -n "${LR:-}" ]] && extra+=(--lr "$LR")
tag="b${BATCH:-default}_lr${LR:-default}"

[[ -s "$OUT/day.jsonl" ]] || "$P" simulate --out "$OUT/day.jsonl" --hours 24 --seed 1 --faults none >&2
[[ -s "$OUT/faults.jsonl" ]] || "$P" simulate --out "$OUT/faults.jsonl" --hours 2 --seed 7 --faults all >&2

for n in $STEPS; do
  base="$OUT/$tag.$n"
  if [[ ! -s "$base.train.json" ]]; then
    echo "convergence: training $n steps ($tag)" >&2
    "$P" train --input "$OUT/day.jsonl" --registry "$OUT/day.jsonl.registry.yaml" \
      --out "$base.ck" --steps "$n" --threads "$THREADS" "${extra[@]}" \
      | tail -n 1 > "$base.train.json.tmp"
    mv "$base.train.json.tmp" "$base.train.json"
  fi
  if [[ ! -s "$base.eval.json" ]]; then
    "$P" eval --train "$OUT/day.jsonl" --test "$OUT/faults.jsonl" --model "$base.ck" \
      --registry "$OUT/day.jsonl.registry.yaml" --detectors model --threads "$THREADS" \
      --json "$base.eval.json.tmp" > "$base.eval.txt"
    mv "$base.eval.json.tmp" "$base.eval.json"
  fi
done

python3 - "$OUT" "$tag" $STEPS <<'EOF'
import json, sys
out, tag, steps = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
rows = []
for n in steps:
    t = json.load(open(f"{out}/{tag}.{n}.train.json"))
    e = json.load(open(f"{out}/{tag}.{n}.eval.json"))
    m = next(d for d in e["detectors"] if d["name"].startswith("model"))["overall"]
    rows.append((n, t["val_loss"], t["seconds"], m["auroc"], f"{m['faults_detected']}/{m['faults']}"))
print(f"settings: {tag} (day: {t['events']:,} events)")
print(f"{'steps':>6} {'val loss':>9} {'train s':>8} {'AUROC':>7} {'faults':>7}")
for n, v, s, a, f in rows:
    print(f"{n:>6} {v:>9.4f} {s:>8.1f} {a:>7.4f} {f:>7}")
(n0, v0, *_), (n1, v1, *_) = rows[0], rows[-1]
gap = (v0 - v1) / v1 * 100
print(f"val loss at {n0} steps is {gap:+.1f} % of its value at {n1}: "
      f"{'within' if abs(gap) <= 5 else 'NOT within'} 5 %")
EOF
}
main "$@"
