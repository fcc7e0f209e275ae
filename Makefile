# The two commands a user needs: `make demo` and `make test`. Both install what
# is missing (scripts/setup.sh, idempotent) into the git-ignored .tools/ folder.
SHELL := /bin/bash
ROOT := $(abspath .)
# Honour a LIBTORCH the user already has; otherwise use ours.
LIBTORCH ?= $(ROOT)/.tools/libtorch
export LIBTORCH
export PATH := $(ROOT)/.tools/bin:$(PATH)

.PHONY: setup build test demo bench examples eval metrics-bench convergence sizing compose-test fuzz fuzz-corpus clean-tools

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release

test: setup
	cargo build --release
	cargo test --release -- --test-threads=2

demo: build
	bash scripts/demo.sh

bench: build
	bash scripts/bench.sh

# The Python examples (examples/) against nats-server + proprio, end to end.
examples: build
	bash scripts/examples.sh

# The detection-quality table (docs/EVAL.md): imports ../shared/data (or
# DATA=...), simulates the OS scenarios, runs `proprio eval` for the model and
# the baselines. Long (see docs/EVAL.md for its wall time); not part of `test`.
eval: build
	SKIP_BUILD=1 bash scripts/eval.sh

# The metrics benchmark (issue 16, docs/EVAL.md): 240 labelled metric series,
# proprio (500 steps, production defaults) against the metric baselines, NAB-like
# window scores. Several minutes (training and scoring); not part of `test`.
# ARGS=... passes flags (e.g. ARGS=--no-model for the baselines alone).
metrics-bench: build
	mkdir -p target/metricbench
	./target/release/proprio metricbench --json target/metricbench/report.json $(ARGS)

# The measurements behind the README's sizing guide: a harvester and a scorer
# process each draining a backlog (PROPRIO_SIZING_EVENTS, default 200,000),
# events per CPU-second and memory per 1,000 keys. Several minutes; not part of `test`.
sizing: build
	cargo test --release --test it sizing:: -- --ignored --nocapture

clean-tools:
	rm -rf .tools

# Validation loss after 500 training steps against 2,000 on a simulated day
# (STEPS, BATCH, LR to vary it). About 20 min at the defaults; not part of `test`.
convergence: build
	bash scripts/convergence.sh

# docker-compose.yml and docker-compose.cluster.yml run for real on this
# machine's Docker engine: local stand-ins for the base images (no registry
# needed), the image built from deploy/Dockerfile, then health, least
# privilege, the demo's alerts, scaling, a NATS restart, the model volume,
# monitoring and a three-node cluster checked with real clients (README's
# "Checking the compose files"). Not part of `test`.
compose-test:
	bash scripts/compose-test.sh

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer; README, "Fuzzing"): 10
# million inputs through the scorer's input path (target `event`), a million
# through `text`, 200,000 through `tokens`, from the checked-in corpus
# (fuzz/corpus/). About 45 min here after a 25 min build; not part of `test`,
# which replays the corpus through the same targets instead. FUZZ_TARGETS,
# FUZZ_RUNS, FUZZ_RUNS_AUX, FUZZ_SECONDS vary it.
fuzz: setup
	bash scripts/fuzz.sh

# Merges the seeds and what `make fuzz` found into fuzz/corpus/, minimized.
fuzz-corpus: setup
	bash scripts/fuzz-corpus.sh
