#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what a telemetry payload
# goes through: `make fuzz` (README, "Fuzzing"). Installs cargo-fuzz into
# .tools/ once, builds the targets of fuzz/ with coverage instrumentation and
# debug assertions, runs each from the checked-in corpus, and fails on the
# first crash (its input lands in fuzz/artifacts/<target>/).
#
#   FUZZ_TARGETS   targets to run (default: event text tokens)
#   FUZZ_RUNS      executions of `event`, the main input path (default 10000000)
#   FUZZ_RUNS_AUX  executions of `text` and `tokens` (default 1000000, 200000)
#   FUZZ_SECONDS   stop each target after this long (default: no limit)
#
# New inputs go to target/fuzz-corpus/<target>, not to the checked-in
# corpus: `make fuzz-corpus` merges them in, minimized.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/fuzz-tools.sh
export PATH="$root/.tools/bin:$PATH"

targets="${FUZZ_TARGETS:-event text tokens}"
# No sanitizer (README, "Fuzzing", says why): cargo-fuzz then passes no -Z
# flag and plain stable builds the targets. RUSTC_BOOTSTRAP stays unset: build
# scripts (anyhow, proc-macro2, thiserror) rerun when it changes, which
# rebuilds the whole instrumented tree.
unset RUSTC_BOOTSTRAP
build=(-s none --debug-assertions --release)
# libtorch's own threads would only compete with the fuzzer's process.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

# The seeds (proto/vectors, hostile shapes) join the checked-in corpus.
python3 scripts/fuzz_seeds.py

echo "fuzz: building $targets (cargo fuzz build ${build[*]})"
start=$(date +%s)
for t in $targets; do cargo fuzz build "${build[@]}" "$t"; done
echo "fuzz: built in $(( $(date +%s) - start )) s"

for t in $targets; do
  case "$t" in
    event) runs="${FUZZ_RUNS:-10000000}" ;;
    text) runs="${FUZZ_RUNS_AUX:-1000000}" ;;
    # The forward is what costs: about 240 inputs/s here.
    *) runs="${FUZZ_RUNS_AUX:-200000}" ;;
  esac
  scratch="target/fuzz-corpus/$t"
  mkdir -p "$scratch" "fuzz/corpus/$t"
  args=(-runs="$runs" -max_len=70000 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
  [ -n "${FUZZ_SECONDS:-}" ] && args+=(-max_total_time="$FUZZ_SECONDS")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  echo "fuzz: $t, ${args[*]}"
  # The first directory takes new inputs; the others are only read.
  s=$(date +%s)
  cargo fuzz run "${build[@]}" "$t" "$scratch" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}"
  echo "fuzz: $t: no crash, $(( $(date +%s) - s )) s wall"
done
echo "fuzz: $targets: no crash"
