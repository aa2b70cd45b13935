#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (repeatable whatever else the
# machine is doing, unlike seconds). A release build of the service runs under callgrind on its
# own prefix, database and topic; 1,000 applicants sell out an event of 100 coupons; then, for
# each route, the counters are zeroed, 2,000 requests are sent (16 at a time, tokens of those
# applicants: 90% losers) and the counters dumped. Prints the service's instructions per request.
#   scripts/callgrind.sh            (about a minute; valgrind from the OS packages)
#   FCFS_BIN=path scripts/callgrind.sh   another build of the service, to compare with
set -euo pipefail
SCRIPT_NAME=callgrind
cd "$(dirname "$0")/.."
source scripts/lib.sh
export APP_ENV=development
command -v valgrind >/dev/null || apt_install valgrind
command -v curl >/dev/null || apt_install curl
prepare_release
bin="${FCFS_BIN:-${CARGO_TARGET_DIR:-target}/release/fcfs-coupon}"
run="callgrind$(date +%s)"
work=$(mktemp -d)
export APP_HTTP__ADDR=127.0.0.1:18081 APP_REDIS__KEY_PREFIX="test-$run" \
  APP_DATABASE__URL="${APP_DATABASE__URL%/*}/fcfs_test_$run" \
  APP_KAFKA__TOPIC="test-$run" APP_KAFKA__GROUP_ID="test-$run" \
  APP_LOG__LEVEL=warn APP_AUTH__JWT_SECRET="callgrind-secret-$run-$(head -c 24 /dev/urandom | base64)" \
  APP_OPS__ADDR=127.0.0.1:19102 \
  APP_RATE_LIMIT__PER_ADDRESS_PER_SEC=0 APP_RATE_LIMIT__PER_USER_PER_SEC=0
base=http://$APP_HTTP__ADDR

valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" serve >"$work/service.log" 2>&1 &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for service 18081 300 "$work/service.log"

admin=$("$bin" token --user 1 --admin)
coupon=$(curl -sf -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name":"callgrind","stock":100}' "$base/coupons" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for user in $(seq 2 1001); do "$bin" token --user "$user"; done >"$work/tokens"

# send METHOD PATH: one request per token line, 16 at a time.
send() {
  xargs -P 16 -I{} curl -s -o /dev/null -X "$1" -H "Authorization: Bearer {}" "$base$2"
}
send POST "/coupons/$coupon/issue" <"$work/tokens"
until [ "$(curl -s "$base/coupons/$coupon/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["issued"])')" = 100 ]; do
  sleep 0.5
done

printf '%-26s %s\n' route "instructions/request"
for route in "POST /coupons/$coupon/issue" "GET /coupons/$coupon/position" "GET /health/live"; do
  set -- $route
  callgrind_control -z "$service" >/dev/null 2>&1
  cat "$work/tokens" "$work/tokens" | send "$1" "$2"
  callgrind_control -d "$1 $2" "$service" >/dev/null 2>&1
  dump=$(ls -t "$work"/out.* | head -n 1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  printf '%-26s %s\n' "$1 ${2/\/$coupon\//\/{id\}\/}" "$((total / 2000))"
done
