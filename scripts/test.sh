#!/usr/bin/env bash
# The whole test suite against real Redis, PostgreSQL and a Kafka-protocol broker, started
# (and installed) as needed. CI runs exactly this.
set -euo pipefail
SCRIPT_NAME=test
cd "$(dirname "$0")/.."
source scripts/lib.sh
# Tests run on secrets of their own; development also lets a bare `fcfs-coupon token` work.
export APP_ENV=development
# A failed test's message is the last thing a long log shows; a backtrace would push it out.
export RUST_BACKTRACE=0

ensure_build_tools
command -v docker-compose >/dev/null || apt_install docker-compose
# The dashboard test drives Debian's Chromium with playwright-core (pinned in tests/browser).
command -v chromium >/dev/null || apt_install chromium
# The TLS terminator in front of the test broker (tls::kafka_over_tls_…).
command -v stunnel >/dev/null || apt_install stunnel4
command -v npm >/dev/null || apt_install nodejs npm
# promtool checks the alert rules. Debian's `prometheus` package ships it, but installing that
# package also starts a Prometheus server on :9090 (its post-install runs the init script, or
# enables and starts the systemd unit) and pulls in the web UI's libraries: take promtool alone.
promtool=$(command -v promtool || echo "$HOME/.local/share/fcfs-coupon/bin/promtool")
if [ ! -x "$promtool" ]; then
  say "extracting promtool from Debian's prometheus package"
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -qq prometheus 2>/dev/null) \
    || { as_root apt-get update -qq && (cd "$debs" && apt-get download -qq prometheus); }
  mkdir -p "${promtool%/*}"
  dpkg-deb --fsys-tarfile "$debs"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$promtool.part"
  chmod 755 "$promtool.part" && mv "$promtool.part" "$promtool"
  rm -rf "$debs"
fi
npm ci --prefix tests/browser --no-audit --no-fund --silent
# The contract fuzzer (tests/api/fuzz.rs): schemathesis, pinned, in a virtualenv of its own.
venv="$HOME/.local/share/fcfs-coupon/schemathesis"
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qixF -f tests/fuzz/requirements.txt; then
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/fuzz/requirements.txt
fi
services_up

# Each test makes its own database (fcfs_test_*) and Redis prefix (test-*); drop earlier runs'.
psql_cmd() { psql "${APP_DATABASE__URL%/*}/postgres" -Atqc "$1"; }
for db in $(psql_cmd "SELECT datname FROM pg_database WHERE datname LIKE 'fcfs\_test\_%'"); do
  psql_cmd "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
done
for role in $(psql_cmd "SELECT rolname FROM pg_roles WHERE rolname LIKE 'fcfs\_test\_%'"); do
  psql_cmd "DROP ROLE IF EXISTS \"$role\"" >/dev/null
done
redis-cli -u "$APP_REDIS__URL" --scan --pattern 'test-*' | xargs -r -n 500 redis-cli -u "$APP_REDIS__URL" DEL >/dev/null

say "docker-compose.yml and its offline override: docker-compose config"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml -f docker-compose.offline.yml config -q
say "deploy/: the alert rules, their unit tests, Prometheus's config and the dashboard's JSON"
"$promtool" check rules deploy/prometheus/alerts.yml
"$promtool" test rules deploy/prometheus/alerts.test.yml
# Finds alerts.yml relative to the config file, as Prometheus in compose does.
"$promtool" check config deploy/prometheus/prometheus.yml
python3 -m json.tool deploy/grafana/fcfs-coupon.json >/dev/null

cargo fmt --all -- --check
cargo test --locked --workspace --all-targets --no-fail-fast
# The same admission, issuance, recovery, live-loss, retention, window, metrics, dashboard,
# scale-out and batching test bodies against a Redis Cluster (3 masters, 3 replicas;
# scripts/services.sh cluster up). The bulkhead, claim-window and failed-batch tests are left
# out: each slows one Redis through a TCP proxy, and a cluster's nodes name each other's real
# addresses.
scripts/services.sh cluster up
for port in 7000 7001 7002 7003 7004 7005; do
  if [ "$(redis-cli -p "$port" role | head -n 1)" = master ]; then
    redis-cli -p "$port" --scan --pattern 'test-*' | xargs -r -n 1 redis-cli -p "$port" UNLINK >/dev/null
  fi
done
say "the parameterised suite against Redis Cluster"
APP_REDIS__MODE=cluster APP_REDIS__NODES=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 \
  cargo test --locked --test api -- admission:: issuance:: recovery:: redis_loss:: retention:: \
  window:: observability:: dashboard:: scale_out:: batching:: \
  --skip the_bulkhead_lets_only_its_share_into_a_slow_gate \
  --skip a_batch_whose_call_fails_answers_every_member_503 \
  --skip a_claim_older_than_the_claim_window_is_not_sent_and_its_lease_hands_it_back
# The admission guarantees again with batched admission off (one script call per application):
# the parallel suite above ran them batched (the default), the cluster pass too.
say "the admission guarantees with APP_GATE__BATCH_WINDOW_US=0"
APP_GATE__BATCH_WINDOW_US=0 cargo test --locked --test api -- admission:: sold_out:: clock:: \
  window:: issuance::three_instances issuance::every_winner scale_out::twenty_events
# What users meet outside the lab, in containers: the stock machines scripts/services.sh was
# written for, and the compose stack in production mode, black-box. Skipped only where no Docker
# engine can start at all (this project's machines can start one: there it must run).
if docker_up; then
  scripts/stock-machines.sh
  scripts/compose.sh test
else
  say "SKIPPED: the stock-machine checks and the compose stack (no Docker engine could be started here)"
fi
