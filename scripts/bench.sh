#!/usr/bin/env bash
# The spike benchmark, end to end: services up, a release build of the service started on its
# own prefix, database and topic, `fcfs-bench spike` against it, the service stopped.
#   scripts/bench.sh [spike options]      e.g. --users 100000 --stock 10000 --concurrency 256
#   scripts/bench.sh issuance [--winners 10000]   the pipeline's drain alone (no HTTP)
#   scripts/bench.sh durability [--calls 20000]    admissions/s with and without a replica's WAIT
# Report and chart land in bench-results/ (report.json, chart.svg).
set -euo pipefail
SCRIPT_NAME=bench
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_release
cargo build --release --locked -p fcfs-bench
if [ "${1:-}" = issuance ] || [ "${1:-}" = durability ]; then
  exec "${CARGO_TARGET_DIR:-target}/release/fcfs-bench" "$@"
fi
bin="${CARGO_TARGET_DIR:-target}/release/fcfs-coupon"
run="bench$(date +%s)"
export APP_HTTP__ADDR=127.0.0.1:18080 APP_REDIS__KEY_PREFIX="test-$run" \
  APP_DATABASE__URL="${APP_DATABASE__URL%/*}/fcfs_test_$run" \
  APP_KAFKA__TOPIC="test-$run" APP_KAFKA__GROUP_ID="test-$run" \
  APP_LOG__LEVEL=warn APP_AUTH__JWT_SECRET="bench-secret-$run-$(head -c 24 /dev/urandom | base64)" \
  APP_OPS__ADDR=127.0.0.1:19100 \
  APP_RATE_LIMIT__PER_ADDRESS_PER_SEC=0 # the whole crowd comes from this one address

"$bin" serve >"bench-service.log" 2>&1 &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null || true' EXIT
wait_for service 18080 60 bench-service.log
"${CARGO_TARGET_DIR:-target}/release/fcfs-bench" spike --url http://127.0.0.1:18080 --service-pid "$service" "$@"
