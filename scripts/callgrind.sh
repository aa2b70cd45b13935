#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (repeatable whatever else the
# machine is doing, unlike seconds). A release build of the service runs under callgrind on its
# own prefix, database and topic; 1,000 applicants sell out an event of 100 coupons; then, for
# each route, the counters are zeroed, 2,000 requests are sent (16 at a time, tokens of those
# applicants: 90% losers) and the counters dumped. Prints the service's instructions per request,
# the 1,000 first applications included.
#   scripts/callgrind.sh            (about a minute; valgrind from the OS packages)
#   FCFS_BIN=path scripts/callgrind.sh   another build of the service, to compare with
#   --stock N      the event's stock (1000: every first application is an admission)
#   --role R       the service's roles (repeatable; default all three, as `serve`)
set -euo pipefail
SCRIPT_NAME=callgrind
cd "$(dirname "$0")/.."
source scripts/lib.sh
export APP_ENV=development
stock=100
roles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stock) stock=${2:?--stock needs a number}; shift 2 ;;
    --role) roles+=(--role "${2:?--role needs api, issuer or consumer}"); shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
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

valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" serve "${roles[@]}" \
  >"$work/service.log" 2>&1 &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for service 18081 300 "$work/service.log"

admin=$("$bin" token --user 1 --admin)
coupon=$(curl -sf -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d "{\"name\":\"callgrind\",\"stock\":$stock}" "$base/coupons" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for user in $(seq 2 1001); do "$bin" token --user "$user"; done >"$work/tokens"

# send METHOD PATH: one request per token line, 16 at a time.
send() {
  xargs -P 16 -I{} curl -s -o /dev/null -X "$1" -H "Authorization: Bearer {}" "$base$2"
}
# measure NAME REQUESTS: runs the rest of the line as a command between zeroed and dumped
# counters, and prints the service's instructions per request.
measure() {
  local name=$1 requests=$2
  shift 2
  callgrind_control -z "$service" >/dev/null 2>&1
  "$@"
  callgrind_control -d "$name" "$service" >/dev/null 2>&1
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t "$work"/out.* | head -n 1)")
  printf '%-34s %s\n' "$name" "$((total / requests))"
}
twice() { cat "$work/tokens" "$work/tokens" | send "$@"; }

printf '%-34s %s\n' route "instructions/request"
measure "POST …/issue, first applications" 1000 send POST "/coupons/$coupon/issue" <"$work/tokens"
# Quiet before the other routes: every winner issued, when this process runs the pipeline.
if [ ${#roles[@]} -eq 0 ]; then
  until [ "$(curl -s "$base/coupons/$coupon/stats" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["issued"])')" = "$stock" ]; do
    sleep 0.5
  done
fi
measure "POST …/issue" 2000 twice POST "/coupons/$coupon/issue"
measure "GET …/position" 2000 twice GET "/coupons/$coupon/position"
measure "GET /health/live" 2000 twice GET /health/live
