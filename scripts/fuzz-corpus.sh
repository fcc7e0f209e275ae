#!/usr/bin/env bash
# Rebuilds the checked-in fuzz corpus (fuzz/corpus/<target>): what it holds,
# the seeds of scripts/fuzz_seeds.py (proto/vectors, hostile shapes) and
# what `make fuzz` kept in target/fuzz-corpus/, merged and minimized by
# `cargo fuzz cmin` (the smallest set of inputs with the same coverage).
# `make fuzz-corpus`; FUZZ_TARGETS as scripts/fuzz.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/fuzz-tools.sh
export PATH="$root/.tools/bin:$PATH" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
unset RUSTC_BOOTSTRAP # as scripts/fuzz.sh: the `none` build
python3 scripts/fuzz_seeds.py
build=(-s none --debug-assertions --release)
for t in ${FUZZ_TARGETS:-event text tokens}; do
  mkdir -p "fuzz/corpus/$t" "target/fuzz-corpus/$t"
  cp -n fuzz/seeds/"$t"/* "target/fuzz-corpus/$t"/ 2>/dev/null || true
  cp -n "target/fuzz-corpus/$t"/* "fuzz/corpus/$t"/ 2>/dev/null || true
  before=$(ls "fuzz/corpus/$t" | wc -l)
  # Every edge once (no hit-count buckets), by set cover: a small corpus
  # with the same edge coverage.
  cargo fuzz cmin "${build[@]}" "$t" "fuzz/corpus/$t" -- -max_len=70000 -timeout=10 -rss_limit_mb=4096 \
    -set_cover_merge=1 -use_counters=0
  echo "fuzz-corpus: $t: $before inputs -> $(ls "fuzz/corpus/$t" | wc -l), $(du -sh "fuzz/corpus/$t" | cut -f1)"
done
