#!/usr/bin/env bash
# The Python examples end to end, against a real nats-server configured from
# deploy/nats.conf (accounts, users, least privilege) and a real `proprio run`:
#
#   examples/publisher.py  as user `publisher`: normal telemetry, then an OOM kill
#   examples/consumer.py   as user `reader`:    the alert, the digest, the prompt
#   proprio run            as user `proprio`:   harvest, train (on `proprio tick`), score, alert
#
# Installs nats-py and msgpack into .tools/venv first (idempotent). Exits 0
# only when what a user expects happened: the OOM kill on svc3 was alerted,
# no alert came before it (the normal traffic, from the first model on, is
# alerted zero times: that is the tolerance), and the prompt the consumer
# builds from the digest after the alert names svc3 and its OOM kill.
# `make examples` runs it.
# Usage: scripts/examples.sh [--setup-only]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
py="$tools/venv/bin/python"

[ -x "$py" ] || bash "$root/scripts/setup.sh"
if ! "$py" -c 'import nats, msgpack' 2>/dev/null; then
  "$py" -m pip --disable-pip-version-check -q install "nats-py==2.16.0" "msgpack>=1.0,<2"
fi
[ "${1:-}" = "--setup-only" ] && { echo "examples: python deps ready"; exit 0; }

proprio="$root/target/release/proprio"
[ -x "$proprio" ] || (cd "$root" && cargo build --release)

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"; mon="$(free_port)"; metrics="$(free_port)"
secret() { "$py" -c 'import secrets; print(secrets.token_hex(12))'; }
export PROPRIO_NATS_PASSWORD="$(secret)" PUBLISHER_NATS_PASSWORD="$(secret)"
export WATCHER_NATS_PASSWORD="$(secret)" READER_NATS_PASSWORD="$(secret)"

# deploy/nats.conf as is, but for its store directory (given by -sd here).
grep -v 'store_dir:' "$root/deploy/nats.conf" > "$work/nats.conf"
"$tools/bin/nats-server" -c "$work/nats.conf" -a 127.0.0.1 -p "$port" -m "$mon" \
  -js -sd "$work/store" > "$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$py" -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break; sleep 0.1; done

url="nats://127.0.0.1:$port"
export PROPRIO_NATS_URL="$url" PROPRIO_NATS_USER=proprio
"$proprio" run --metrics-addr "127.0.0.1:$metrics" --cold-steps 150 --cooldown 0 \
  --digest-debounce 1s --registry "$root/deploy/services.yaml" > "$work/proprio.log" 2>&1 &
pids+=($!)

metric() { # the value of a metric line (0 if absent)
  "$proprio" health --addr "127.0.0.1:$metrics" --path /metrics 2>/dev/null \
    | awk -v m="$1" '$1==m {print $2; f=1} END {if(!f) print 0}'
}
wait_for() { # wait_for WHAT SECONDS METRIC MIN
  local t0=$SECONDS
  until awk -v v="$(metric "$3")" -v n="$4" 'BEGIN{exit !(v>=n)}'; do
    if (( SECONDS - t0 > $2 )); then
      echo "examples: timed out waiting for $1 ($3 < $4)" >&2
      tail -20 "$work/proprio.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "examples: $1 ($3 = $(metric "$3")) after $((SECONDS - t0))s"
}
until "$proprio" health --addr "127.0.0.1:$metrics" >/dev/null 2>&1; do sleep 0.2; done
echo "examples: nats-server on $url (deploy/nats.conf), proprio ready"

# Six services: a backdated normal stretch to learn from, then steady live
# traffic for the rest of the run (a service that stopped would rightly be
# reported silent).
pub="nats://publisher:$PUBLISHER_NATS_PASSWORD@127.0.0.1:$port"
"$py" "$root/examples/publisher.py" --nats "$pub" --backfill 40 --live 600 > "$work/publisher.log" 2>&1 &
pids+=($!)
wait_for "harvested" 60 proprio_events_harvested_total 300

# The consumer listens from before the first model: every alert on the
# normal traffic counts against the detector.
reader="nats://reader:$READER_NATS_PASSWORD@127.0.0.1:$port"
"$py" "$root/examples/consumer.py" --nats "$reader" --until-alert --timeout 600 \
  --expect svc3:OOMKilled --expect-prompt 'svc3 [^,\n]*(oom|out of memory)' > "$work/consumer.out" 2>&1 &
consumer=$!
pids+=($consumer)

RUST_LOG=warn "$proprio" tick
wait_for "a model trained" 300 'proprio_growth_cycles_total{outcome="ok"}' 1
wait_for "the scorer swapped it in" 60 proprio_model_swaps_total 1
# Normal live traffic scored by the model before the fault.
sleep 10
# One event unlike anything before, from svc3.
"$py" "$root/examples/publisher.py" --nats "$pub" --services 0 --live 0 --fault
status=0
wait "$consumer" || status=$?
cat "$work/consumer.out"
echo "examples: proprio_alerts_published_total{reason=\"surprise\"} = $(metric 'proprio_alerts_published_total{reason="surprise"}')"
if [ "$status" -eq 1 ]; then
  echo "examples: FAIL: no alert on svc3's OOM kill (or no digest after it)" >&2
  tail -30 "$work/proprio.log" >&2
  exit 1
elif [ "$status" -ne 0 ]; then
  echo "examples: FAIL: see 'expectation failed' above" >&2
  exit 1
fi
echo "examples: ok"
