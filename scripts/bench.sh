#!/usr/bin/env bash
# The spike benchmark, end to end: services up, a release build of the service started on its
# own prefix, database and topic, `fcfs-bench spike` against it, the service stopped.
#   scripts/bench.sh [spike options]      e.g. --users 100000 --stock 10000 --concurrency 256
#   scripts/bench.sh issuance [--winners 10000] [--rounds 2]   the pipeline's drain alone (no
#                                     HTTP), fairness log off and on in alternating rounds
#   scripts/bench.sh durability [--calls 20000]    admissions/s with and without a replica's WAIT
#   scripts/bench.sh batching [--rounds 2] [spike options]   the spike with batched admission off
#                                     (APP_GATE__BATCH_WINDOW_US=0) and on, back to back, and a
#                                     table of both (bench-results/batching/)
#   scripts/bench.sh ceiling [--applications 200000]   one event's admissions/s through the
#                                     batched script, no HTTP, 1 vs 16 vs 64 a call
#   scripts/bench.sh crowd [--smoke] [crowd options]   applications alone, then the same with
#                                     event-page readers and position pollers (fcfs-bench crowd
#                                     --help); standalone, on a Redis of its own (AOF on, as the
#                                     scripts' one) so that INFO commandstats counts this service
#                                     only; --smoke: small numbers, a few seconds (later options win)
#   --redis-mode standalone|cluster   (spike) the service on the scripts' Redis (default) or on
#                                     the local cluster (scripts/services.sh cluster up)
#   --events K                        (spike) the crowd spread over K events, each of --stock
#   --pipeline-apart                  (spike) the issuer and consumer in a process of their own at
#                                     nice 10, the API alone in the measured one (as on separate
#                                     hosts, as far as two shared cores allow)
# Report and chart land in bench-results/ (report.json, chart.svg); crowd's in bench-results/crowd/.
set -euo pipefail
SCRIPT_NAME=bench
cd "$(dirname "$0")/.."
source scripts/lib.sh
# Benchmarks run on throw-away databases and secrets (issuance and durability mint their own).
export APP_ENV=development

args=()
redis_mode=standalone
pipeline_apart=
smoke=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pipeline-apart) pipeline_apart=1; shift ;;
    --smoke) smoke=(--users 40000 --stock 2000 --concurrency 64 --readers 16 --pollers 16
                    --duration 3 --cost-secs 1 --out bench-results/crowd-smoke); shift ;;
    --redis-mode) redis_mode=${2:?--redis-mode needs standalone or cluster}; shift 2 ;;
    --redis-mode=*) redis_mode=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]}"

prepare_release
case "$redis_mode" in
  standalone) ;;
  cluster)
    scripts/services.sh cluster up
    export APP_REDIS__MODE=cluster APP_REDIS__NODES=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
    ;;
  *) die "--redis-mode: standalone or cluster, not $redis_mode" ;;
esac
cargo build --release --locked -p fcfs-bench
if [ "${1:-}" = issuance ] || [ "${1:-}" = durability ] || [ "${1:-}" = ceiling ]; then
  exec "${CARGO_TARGET_DIR:-target}/release/fcfs-bench" "$@"
fi
bin="${CARGO_TARGET_DIR:-target}/release/fcfs-coupon"
bench="${CARGO_TARGET_DIR:-target}/release/fcfs-bench"
export APP_HTTP__ADDR=127.0.0.1:18080 APP_LOG__LEVEL=warn APP_OPS__ADDR=127.0.0.1:19100 \
  APP_RATE_LIMIT__PER_ADDRESS_PER_SEC=0 # the whole crowd comes from this one address
service=
pipeline=
redis=
redis_dir=
trap 'kill $service $pipeline $redis 2>/dev/null; wait $service $pipeline $redis 2>/dev/null || true
  [ -z "$redis_dir" ] || rm -rf "$redis_dir"' EXIT

# A Redis server of the bench's own on a free port, configured as the scripts' one (AOF on).
private_redis() {
  local port=16379
  while listening "$port"; do port=$((port + 1)); done
  redis_dir=$(mktemp -d)
  redis-server --bind 127.0.0.1 --port "$port" --appendonly yes --dir "$redis_dir" \
    --logfile "$redis_dir/redis.log" &
  redis=$!
  wait_for redis "$port" 30 "$redis_dir/redis.log"
  export APP_REDIS__URL="redis://127.0.0.1:$port"
}

# A fresh service on its own prefix, database, topic and secret (and the pipeline apart).
start_service() {
  local run="bench$(date +%s%N)"
  export APP_REDIS__KEY_PREFIX="test-$run" \
    APP_DATABASE__URL="${APP_DATABASE__URL%/*}/fcfs_test_$run" \
    APP_KAFKA__TOPIC="test-$run" APP_KAFKA__GROUP_ID="test-$run" \
    APP_AUTH__JWT_SECRET="bench-secret-$run-$(head -c 24 /dev/urandom | base64)"
  local roles=()
  [ -n "$pipeline_apart" ] && roles=(--role api)
  "$bin" serve "${roles[@]}" >"bench-service.log" 2>&1 &
  service=$!
  wait_for service 18080 60 bench-service.log
  if [ -n "$pipeline_apart" ]; then
    # Started once the API has created and migrated the database.
    APP_OPS__ADDR=127.0.0.1:19101 nice -n 10 "$bin" serve --role issuer --role consumer \
      >"bench-pipeline.log" 2>&1 &
    pipeline=$!
    wait_for pipeline 19101 60 bench-pipeline.log
  fi
}

stop_service() {
  kill $service $pipeline 2>/dev/null
  wait $service $pipeline 2>/dev/null || true
  service= pipeline=
}

# One spike against a fresh service.
spike_once() {
  start_service
  "$bench" spike --url http://127.0.0.1:18080 --ops-url http://127.0.0.1:19100 \
    --service-pid "$service" "$@"
  stop_service
}

if [ "${1:-}" = crowd ]; then
  shift
  if [ "$redis_mode" = standalone ]; then private_redis; fi
  start_service
  "$bench" crowd --url http://127.0.0.1:18080 "${smoke[@]}" "$@"
  stop_service
  exit 0
fi

if [ "${1:-}" = batching ]; then
  # Batched admission off and on, back to back, in alternating rounds.
  shift
  rounds=2
  if [ "${1:-}" = --rounds ]; then rounds=${2:?--rounds needs a number}; shift 2; fi
  window=${APP_GATE__BATCH_WINDOW_US:-200}
  reports=()
  for round in $(seq "$rounds"); do
    for w in 0 "$window"; do
      say "round $round: APP_GATE__BATCH_WINDOW_US=$w"
      APP_GATE__BATCH_WINDOW_US=$w spike_once --out "bench-results/batching/window-$w-round-$round" "$@"
      reports+=("bench-results/batching/window-$w-round-$round/report.json")
    done
  done
  exec "$bench" compare "${reports[@]}"
fi
spike_once "$@"
