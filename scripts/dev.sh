#!/usr/bin/env bash
# From a fresh clone to a running service: brings Redis, PostgreSQL and the Kafka broker up,
# builds, prints an admin token and a user token, and runs the service in the foreground.
set -euo pipefail
SCRIPT_NAME=dev
cd "$(dirname "$0")/.."
source scripts/lib.sh
# The built-in development secret, with a warning in the log; production refuses it.
export APP_ENV=development

prepare_release
bin="${CARGO_TARGET_DIR:-target}/release/fcfs-coupon"
admin=$("$bin" token --user 1 --admin)
user=$("$bin" token --user 42)
port=${APP_HTTP__ADDR:-0.0.0.0:8080}
port=${port##*:}

cat <<TXT

  Swagger UI:  http://127.0.0.1:$port/docs   (press Authorize, paste a token)

  Admin token (user 1):
$admin

  User token (user 42):
$user

  Try it:
    curl -s -X POST http://127.0.0.1:$port/coupons -H "Authorization: Bearer $admin" \\
      -H 'Content-Type: application/json' -d '{"name":"Spring sale","stock":100}'
    curl -s -X POST http://127.0.0.1:$port/coupons/1/issue -H "Authorization: Bearer $user"
    curl -s http://127.0.0.1:$port/coupons/1/position -H "Authorization: Bearer $user"

  More tokens: $bin token --user <id> [--admin]      Stop: Ctrl-C

TXT
exec "$bin" serve
