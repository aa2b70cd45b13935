#!/usr/bin/env bash
# A drop rehearsed against the local stack, the way an operator rehearses one against staging
# or production: services up, a release build of the service started on its own prefix,
# database and topic, `fcfs-bench rehearse` against it over HTTP, the service stopped. The
# verdict's exit status is this script's.
#   scripts/rehearse.sh [rehearse options]   e.g. --users 20000 --stock 2000 --ramp 5
#   --no-consumer                            the service without its consumer role (the
#                                            rehearsal must then fail on the drain)
# Against a real deployment, run the bench itself (README, "Rehearsing a drop"):
#   APP_AUTH__REHEARSAL_SECRET=… fcfs-bench rehearse --url https://… --admin-token …
# The report and chart land in rehearsal-results/ (report.json, chart.svg).
set -euo pipefail
SCRIPT_NAME=rehearse
cd "$(dirname "$0")/.."
source scripts/lib.sh
# Throw-away database and secrets; the development rehearsal secret signs the users' tokens.
export APP_ENV=development

roles=()
args=()
for arg in "$@"; do
  case "$arg" in
    --no-consumer) roles=(--role api --role issuer) ;;
    *) args+=("$arg") ;;
  esac
done

prepare_release
cargo build --release --locked -p fcfs-bench
bin="${CARGO_TARGET_DIR:-target}/release/fcfs-coupon"
bench="${CARGO_TARGET_DIR:-target}/release/fcfs-bench"
run="rehearse$(date +%s%N)"
export APP_HTTP__ADDR=127.0.0.1:18090 APP_OPS__ADDR=127.0.0.1:19190 APP_LOG__LEVEL=warn \
  APP_REDIS__KEY_PREFIX="test-$run" APP_DATABASE__URL="${APP_DATABASE__URL%/*}/fcfs_test_$run" \
  APP_KAFKA__TOPIC="test-$run" APP_KAFKA__GROUP_ID="test-$run" \
  APP_AUTH__JWT_SECRET="rehearse-secret-$run-$(head -c 24 /dev/urandom | base64)"
"$bin" serve "${roles[@]}" >rehearse-service.log 2>&1 &
service=$!
trap 'kill $service 2>/dev/null; wait $service 2>/dev/null || true' EXIT
wait_for service 18090 60 rehearse-service.log
"$bench" rehearse --url http://127.0.0.1:18090 ${args[@]+"${args[@]}"}
