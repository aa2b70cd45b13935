#!/usr/bin/env bash
# Makes Redis (6379), PostgreSQL (5432) and the Tansu Kafka-protocol broker (9092) listen on
# 127.0.0.1 for development and tests. Idempotent: a service that already answers is left alone,
# a missing one is installed (OS packages; Tansu from crates.io, built once into ~/.cargo/bin).
# A Redis or PostgreSQL already there that this project cannot use as it is (Redis without AOF
# or with a password, PostgreSQL without passwordless access for `postgres`, as a stock Debian
# install runs them) is left alone too, and a private one is started beside it (Redis 6380,
# PostgreSQL 5433). Where each one is goes to $STATE_DIR/env, which dev.sh, test.sh and
# bench.sh read (an APP_… variable already set wins).
#
#   scripts/services.sh up       start whatever is not running
#   scripts/services.sh down     stop only what this script started
#   scripts/services.sh status   what listens, what this script started, where the logs are
#   scripts/services.sh tansu    install the pinned Tansu if missing (nothing started); print
#                                its path (scripts/stock-machines.sh hands it to containers)
#   scripts/services.sh cluster up|down|status
#                                a local Redis Cluster: 3 masters and 3 replicas on 7000-7005
#                                (for APP_REDIS__MODE=cluster; see README)
#
# State and logs: $FCFS_SERVICES_DIR (default ~/.local/state/fcfs-coupon), logs in its logs/.
set -euo pipefail
SCRIPT_NAME=services
source "$(dirname "$0")/lib.sh"

STATE_DIR="${FCFS_SERVICES_DIR:-$HOME/.local/state/fcfs-coupon}"
LOG_DIR="$STATE_DIR/logs"
RUN_DIR="$STATE_DIR/run"
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$LOG_DIR" "$RUN_DIR"

REDIS_PORT=6379
PG_PORT=5432
ENV_FILE="$STATE_DIR/env"

started_by_us() { [ -f "$RUN_DIR/$1.started" ]; }

# A Redis this project can use: answers without a password, and keeps an append-only file.
redis_usable() {
  [ "$(redis-cli -h 127.0.0.1 -p "$1" config get appendonly 2>/dev/null | sed -n 2p)" = yes ]
}

# A PostgreSQL this project can use: `postgres` logs in without a password.
pg_usable() {
  PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc 'SELECT 1' \
    >/dev/null 2>&1
}
mark_started() { echo "$2" >"$RUN_DIR/$1.started"; }

# Runs a command as user $1: directly when that is who we are; else through runuser, from /,
# since that user may not be able to enter the caller's directory (root's home is mode 700).
run_as() {
  local user=$1
  shift
  if [ "$user" = "$(id -un)" ]; then "$@"; return; fi
  (cd / && as_root runuser -u "$user" -- "$@")
}

redis_up() {
  command -v redis-server >/dev/null || apt_install redis-server
  if listening 6379; then
    if redis_usable 6379; then say "redis: already listening on 6379"; return; fi
    say "redis: the one on 6379 runs without AOF or wants a password; using a private one on 6380"
    REDIS_PORT=6380
    if listening 6380; then
      # Ours from an earlier run, or someone else's: only a usable one is taken.
      redis_usable 6380 || die "redis: something on 6380 is not a Redis this project can use (no password, AOF on); free the port or set APP_REDIS__URL"
      say "redis: already listening on 6380"; return
    fi
  fi
  mkdir -p "$STATE_DIR/redis"
  # AOF on: a restart keeps admitted winners (see README, "Guarantees").
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly yes \
    --dir "$STATE_DIR/redis" --logfile "$LOG_DIR/redis.log" --pidfile "$RUN_DIR/redis.pid"
  mark_started redis "pid $RUN_DIR/redis.pid"
  wait_for redis "$REDIS_PORT" 30 "$LOG_DIR/redis.log"
  say "redis: started on $REDIS_PORT (log $LOG_DIR/redis.log)"
}

# The newest server's binaries. Not just any /usr/lib/postgresql/*/bin: postgresql-client-NN
# (what `psql` comes in) fills that directory too, with no server in it.
pg_bin() {
  local ctl
  ctl=$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$ctl" ]; then dirname "$ctl"; fi
}

postgres_up() {
  command -v psql >/dev/null || apt_install postgresql-client
  if [ "$PG_PORT" = 5432 ] && listening 5432; then
    if pg_usable 5432; then say "postgres: already listening on 5432"; return; fi
    say "postgres: the one on 5432 wants a password; using a private one on 5433"
    PG_PORT=5433
  fi
  # Moved to 5433 (above, or below after a stopped cluster turned out unusable): ours from an
  # earlier run, or someone else's, is taken only if usable, and never started a second time.
  if [ "$PG_PORT" = 5433 ] && listening 5433; then
    pg_usable 5433 || die "postgres: something on 5433 is not a PostgreSQL where postgres logs in without a password; free the port or set APP_DATABASE__URL"
    say "postgres: already listening on 5433"; return
  fi
  # A cluster the OS already has (Debian's pg_ctlcluster) keeps its data and settings.
  if [ "$PG_PORT" = 5432 ] && command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | awk '$3 == 5432' | grep -q .; then
    local cluster
    cluster=$(pg_lsclusters -h | awk '$3 == 5432 {print $1" "$2; exit}')
    # shellcheck disable=SC2086
    as_root pg_ctlcluster --skip-systemctl-redirect $cluster start
    wait_for postgres 5432 60
    if ! pg_usable 5432; then
      # A stock cluster asks `postgres` for a password over TCP: put it back as it was.
      say "postgres: cluster $cluster wants a password; stopping it again and using a private one on 5433"
      # shellcheck disable=SC2086
      as_root pg_ctlcluster --skip-systemctl-redirect $cluster stop
      PG_PORT=5433
      postgres_up
      return
    fi
    mark_started postgres "cluster $cluster"
  else
    if [ -z "$(pg_bin)" ]; then
      apt_install postgresql
      # Debian's package may have created and started a cluster of its own on 5432: decide
      # again with it in view, rather than start a second server on its port.
      if [ "$PG_PORT" = 5432 ] && { listening 5432 || pg_lsclusters -h 2>/dev/null | awk '$3 == 5432' | grep -q .; }; then
        postgres_up
        return
      fi
    fi
    local bin data owner log
    bin=$(pg_bin)
    # The server refuses to run as root; as root it runs as the postgres user, with its data and
    # its log where that user can reach them: not under root's home (mode 700, where $LOG_DIR
    # is), so the log is written beside the data and linked into $LOG_DIR.
    if [ "$(id -u)" -eq 0 ]; then
      data=/var/lib/fcfs-coupon/postgres; owner=postgres; log=/var/lib/fcfs-coupon/postgres.log
    else
      data="$STATE_DIR/postgres"; owner=$(id -un); log="$LOG_DIR/postgres.log"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      as_root mkdir -p "$data"
      as_root chown "$owner" "$data"
      run_as "$owner" "$bin/initdb" -D "$data" -U postgres -A trust >"$LOG_DIR/initdb.log"
    fi
    touch "$log" && as_root chown "$owner" "$log" 2>/dev/null || true
    [ "$log" = "$LOG_DIR/postgres.log" ] || ln -sfn "$log" "$LOG_DIR/postgres.log"
    run_as "$owner" "$bin/pg_ctl" -D "$data" -l "$log" -w \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
    mark_started postgres "data $data owner $owner"
  fi
  wait_for postgres "$PG_PORT" 60 "$LOG_DIR/postgres.log"
  say "postgres: started on $PG_PORT"
}

# The pinned Tansu: what cargo installed, or, where there is no cargo (a machine or container
# handed a Tansu built elsewhere), a `tansu` on PATH that says it is that version.
tansu_installed() {
  command -v tansu >/dev/null || return 1
  if command -v cargo >/dev/null; then
    cargo install --list 2>/dev/null | grep -q "^tansu v$TANSU_VERSION:"
  else
    [ "$(tansu --version 2>/dev/null)" = "tansu $TANSU_VERSION" ]
  fi
}

tansu_install() {
  tansu_installed && return
  ensure_build_tools
  say "kafka: building Tansu $TANSU_VERSION from crates.io (about 10 minutes, once per machine)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
    >"$LOG_DIR/tansu-install.log" 2>&1 || { tail -n 30 "$LOG_DIR/tansu-install.log" >&2; die "installing tansu failed"; }
}

tansu_up() {
  if listening 9092; then say "kafka: already listening on 9092"; return; fi
  tansu_install
  # sqlite:// storage keeps the log like Kafka does: a consumer resuming mid-batch and the
  # reconciler's drain check (high watermarks) behave as they would in production.
  # Tansu puts the sqlite path under its working directory.
  mkdir -p "$STATE_DIR/tansu"
  # The subshell becomes Tansu (exec; setsid forks not, as a script's background job leads no
  # process group), so $! is the broker's pid, the one `down` stops. (A `cd && tansu &` would
  # put the whole list in a waiting subshell: $! its pid, and the broker outliving its kill.)
  (cd "$STATE_DIR/tansu" && exec setsid nohup tansu broker --storage-engine "sqlite://tansu.db" \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    >"$LOG_DIR/tansu.log" 2>&1 </dev/null) &
  echo $! >"$RUN_DIR/tansu.pid"
  mark_started tansu "pid $RUN_DIR/tansu.pid"
  wait_for kafka 9092 60 "$LOG_DIR/tansu.log"
  say "kafka: Tansu started (log $LOG_DIR/tansu.log)"
}

stop_pidfile() {
  local pidfile=$1
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

down() {
  if started_by_us tansu; then stop_pidfile "$RUN_DIR/tansu.pid"; rm -f "$RUN_DIR/tansu.started"; say "kafka: stopped"; fi
  if started_by_us redis; then stop_pidfile "$RUN_DIR/redis.pid"; rm -f "$RUN_DIR/redis.started"; say "redis: stopped"; fi
  if started_by_us postgres; then
    read -r kind a b c <"$RUN_DIR/postgres.started" || true
    if [ "$kind" = cluster ]; then
      as_root pg_ctlcluster --skip-systemctl-redirect "$a" "$b" stop
    else
      run_as "$c" "$(pg_bin)/pg_ctl" -D "$a" -w stop >/dev/null
    fi
    rm -f "$RUN_DIR/postgres.started"
    say "postgres: stopped"
  fi
}

status() {
  local name port
  for pair in redis:6379 postgres:5432 kafka:9092; do
    name=${pair%%:*}
    port=${pair##*:}
    local file=$name
    [ "$name" = kafka ] && file=tansu
    printf '%-9s %-14s %s\n' "$name" \
      "$(listening "$port" && echo "up ($port)" || echo "down ($port)")" \
      "$(started_by_us "$file" && echo "started by this script" || echo "not started by this script")"
  done
  echo "logs: $LOG_DIR"
  if [ -f "$ENV_FILE" ]; then echo "the scripts' settings ($ENV_FILE):"; cat "$ENV_FILE"; fi
}

# Where the services are, for the other scripts; what the caller set already wins.
write_env() {
  cat >"$ENV_FILE" <<ENV
export APP_REDIS__URL="\${APP_REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}"
export APP_DATABASE__URL="\${APP_DATABASE__URL:-postgres://postgres@127.0.0.1:$PG_PORT/fcfs}"
ENV
}

CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)

# Ok, and every master has its replica (create assigns them just after the slots).
cluster_ok() {
  redis-cli -p 7000 cluster info 2>/dev/null | grep -q '^cluster_state:ok' &&
    [ "$(redis-cli -p 7000 cluster nodes | grep -c slave)" = 3 ]
}

cluster_up() {
  command -v redis-server >/dev/null || apt_install redis-server
  local port dir
  for port in "${CLUSTER_PORTS[@]}"; do
    listening "$port" && continue
    dir="$STATE_DIR/cluster/$port"
    mkdir -p "$dir"
    # A short node timeout: a killed master's replica takes over within a few seconds here.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --appendonly yes \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --dir "$dir" --logfile "$LOG_DIR/cluster-$port.log" --pidfile "$RUN_DIR/cluster-$port.pid"
    mark_started "cluster-$port" "pid $RUN_DIR/cluster-$port.pid"
    wait_for "cluster node" "$port" 30 "$LOG_DIR/cluster-$port.log"
  done
  if ! cluster_ok && [ "$(redis-cli -p 7000 cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
    say "redis cluster: creating 3 masters with a replica each"
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
      --cluster-replicas 1 --cluster-yes >"$LOG_DIR/cluster-create.log"
  fi
  local deadline=$((SECONDS + 60))
  until cluster_ok; do
    [ $SECONDS -lt "$deadline" ] || die "the Redis cluster is not ok after 60s (redis-cli -p 7000 cluster info)"
    sleep 0.2
  done
  say "redis cluster: ok on 7000-7005 (APP_REDIS__MODE=cluster APP_REDIS__NODES=$(cluster_nodes))"
}

cluster_nodes() { printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}" | sed 's/,$//'; }

cluster_down() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    if started_by_us "cluster-$port"; then
      stop_pidfile "$RUN_DIR/cluster-$port.pid"
      rm -f "$RUN_DIR/cluster-$port.started"
    fi
  done
  say "redis cluster: stopped (its data stays in $STATE_DIR/cluster)"
}

cluster_status() {
  if ! listening 7000; then echo "redis cluster: down"; return; fi
  redis-cli -p 7000 cluster info | grep -E '^cluster_(state|known_nodes|size):'
  redis-cli -p 7000 cluster nodes | awk '{print $2, $3, $9}'
  echo "APP_REDIS__MODE=cluster APP_REDIS__NODES=$(cluster_nodes)"
}

case "${1:-} ${2:-}" in
  "up "*) redis_up; postgres_up; tansu_up; write_env ;;
  "down "*) down ;;
  "status "*) status ;;
  "tansu "*) tansu_install; command -v tansu ;;
  "cluster up") cluster_up ;;
  "cluster down") cluster_down ;;
  "cluster status") cluster_status ;;
  *) echo "usage: $0 up|down|status|tansu | cluster up|down|status" >&2; exit 2 ;;
esac
