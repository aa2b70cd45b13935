#!/usr/bin/env bash
# The stock-machine paths of scripts/services.sh, tested on stock machines: Debian containers made
# from the compose stack's base image (lib.sh's base_image), one per scenario, each running
# `scripts/services.sh up` (the repo's scripts/ mounted read-only where root's clone would be,
# /root/fcfs-coupon) and then the host-built service (`fcfs-coupon serve`, APP_ENV=development,
# at the places services.sh's env file names) until /health/ready answers. The scenarios:
#   a  redis-no-aof      Debian's Redis on 6379 without AOF: left alone, a private one on 6380
#   b  pg-password       Debian's PostgreSQL on 5432 wants a password (md5): left alone, a
#                        private one on 5433
#   c  pg-stopped        an installed, stopped Debian cluster on 5432 (Debian's scram): started,
#                        found unusable, stopped again; a private one on 5433
#   d  bare              nothing installed: everything from apt, whose packages start Debian's
#                        Redis and cluster (as on a booted machine) for services.sh to work around
#   e  pg-stopped-trust  a stopped cluster on 5432 that `postgres` may use: started and used
# Each runs `up` a second time too (it must settle on the same places) and `down` (it must stop
# what it started, and only that). One line per scenario: PASS/FAIL, the ports services.sh
# chose, seconds; the exit status is 1 when any failed.
#
#   scripts/stock-machines.sh [a b c d e]   the scenarios named (default all, in parallel)
#   scripts/stock-machines.sh --serial      one after another (to time them apart)
#   FCFS_BIN=path TANSU_BIN=path            a service / Tansu built elsewhere (default: this
#                                           checkout's `cargo build --release`, and the Tansu
#                                           services.sh pins, built here once)
#
# Docker is installed and started as needed (lib.sh's docker_up; a dockerd this script started
# is stopped at the end). Images fcfs-stock-machine:* are kept, with the packages installed in
# them, so a second run starts in seconds; containers are removed at exit, pass or fail. Logs:
# $FCFS_SERVICES_DIR/stock-machines/ (default ~/.local/state/fcfs-coupon/stock-machines/).

# The in_* functions run only inside the containers, which shellcheck takes for unreachable code.
# shellcheck disable=SC2317
set -euo pipefail
SCRIPT_NAME="stock-machines"
cd "$(dirname "$0")/.."
source scripts/lib.sh

declare -A NAME=([a]=redis-no-aof [b]=pg-password [c]=pg-stopped [d]=bare [e]=pg-stopped-trust)
# The image each starts from (fcfs-stock-machine:<image>; see dockerfile below).
declare -A IMAGE=([a]=pg-trust [b]=pg-md5 [c]=pg-scram [d]=bare [e]=pg-trust)
# What services.sh must settle on: "<redis port> <postgres port>".
declare -A EXPECT=([a]="6380 5432" [b]="6379 5433" [c]="6379 5433" [d]="6380 5433" [e]="6379 5432")
# Ports services.sh starts a server on (down must free them) and the machine's own servers it
# must leave alone (still listening after up and after down).
declare -A OURS=([a]="6380 9092" [b]="6379 5433 9092" [c]="6379 5433 9092" [d]="6380 5433 9092" [e]="6379 5432 9092")
declare -A STOCK=([a]="6379 5432" [b]="5432" [c]="" [d]="6379 5432" [e]="")
# How long one scenario may take: (d) downloads Redis and PostgreSQL.
SCENARIO_TIMEOUT=900
OUT_DIR="${FCFS_SERVICES_DIR:-$HOME/.local/state/fcfs-coupon}/stock-machines"

serial=""
scenarios=()
for arg in "$@"; do
  case $arg in
    --serial) serial=1 ;;
    a | b | c | d | e) scenarios+=("$arg") ;;
    -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(a b c d e)

# --- The images --------------------------------------------------------------------------------

# fcfs-stock-machine:<image>'s Dockerfile, for `docker build -` (on stdin: no build context,
# nothing of the repo in an image; the packages are installed here, once).
dockerfile() {
  local image=$1 base=$2
  cat <<DOCKERFILE
FROM $base
# Stock machines have a UTF-8 locale; PostgreSQL's clusters take theirs from it.
ENV LANG=C.UTF-8
# curl is the harness's readiness probe (the project's runtime image installs it too).
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
DOCKERFILE
  case $image in
    pg-*) cat <<'DOCKERFILE'
# What an admin's `apt install redis-server postgresql` leaves (recommends and all). No init runs
# in a container, so invoke-rc.d starts nothing: both are installed and stopped, cluster 15/main
# created on 5432 with Debian's pg_hba.conf (scram-sha-256 over TCP).
RUN DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null
DOCKERFILE
      ;;
  esac
  local hba='/etc/postgresql/*/main/pg_hba.conf'
  case $image in
    # Set up as the README asks of a PostgreSQL the project may use: `postgres` logs in from
    # 127.0.0.1 without a password.
    pg-trust) printf '%s\n' "RUN sed -ri 's/^(host\s+all\s+all\s+\S+\s+)\S+/\1trust/' $hba && grep -Eq '^host\s+all\s+all\s+127.0.0.1/32\s+trust' $hba" ;;
    # Passwords over TCP, md5 (pg-scram keeps Debian's scram-sha-256).
    pg-md5) printf '%s\n' "RUN sed -ri 's/^(host\s+all\s+all\s+\S+\s+)\S+/\1md5/' $hba && grep -Eq '^host\s+all\s+all\s+127.0.0.1/32\s+md5' $hba" ;;
    pg-scram) printf '%s\n' "RUN grep -Eq '^host\s+all\s+all\s+127.0.0.1/32\s+scram-sha-256' $hba" ;;
    bare) cat <<'DOCKERFILE'
# On a booted machine a package's post-install starts its service; in a container invoke-rc.d
# refuses ("No init system and policy-rc.d missing! Defaulting to block"). Allowing it makes the
# apt-get install that services.sh runs behave as on a stock machine: Debian's Redis (no AOF)
# comes up on 6379 and its cluster (passwords over TCP) on 5432, and services.sh must cope.
# (Official images' docker-clean would empty the .deb cache kept between runs.)
RUN printf '#!/bin/sh\nexit 0\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && rm -f /etc/apt/apt.conf.d/docker-clean
DOCKERFILE
      ;;
  esac
}

build_images() {
  local base image log images start=$SECONDS
  base=$(base_image)
  mkdir -p "$OUT_DIR"
  images=$(for s in "${scenarios[@]}"; do echo "${IMAGE[$s]}"; done | sort -u)
  # One after another: the layers they share (curl; Redis and PostgreSQL) are built once.
  for image in $images; do
    log="$OUT_DIR/build-$image.log"
    if ! dockerfile "$image" "$base" | docker build -t "fcfs-stock-machine:$image" - >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "building fcfs-stock-machine:$image failed (log: $log)"
    fi
  done
  say "images ready in $((SECONDS - start))s (from $base): $(echo "$images" | paste -sd, | sed 's/,/, /g')"
}

# --- Inside a container: shipped there with `declare -f`, run by `bash -s` ---------------------

in_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
in_fail() { echo "FAIL: $*"; exit 1; }
in_step() { echo "=== $*"; }
# appendonly of the Redis on port $1, asked without a password ("" when it does not answer so).
in_aof() { redis-cli -h 127.0.0.1 -p "$1" config get appendonly 2>/dev/null | sed -n 2p; }
# `postgres` logs in over TCP without a password.
in_pg_login() {
  PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1
}
# The status (online/down) of the Debian cluster configured on port $1; nothing when none is.
in_cluster() { pg_lsclusters -h 2>/dev/null | awk -v port="$1" '$3 == port {print $4; exit}'; }
in_wait_port() {
  local deadline=$((SECONDS + $2))
  until in_listening "$1"; do [ "$SECONDS" -lt "$deadline" ] || return 1; sleep 0.2; done
}

# The stock machine as the scenario wants it, checked before services.sh sees it.
in_machine() {
  case $1 in
    a)
      # Debian's Redis with its own configuration, AOF off (Debian's default, said explicitly).
      mkdir -p /run/redis && chown redis:redis /run/redis
      runuser -u redis -- redis-server /etc/redis/redis.conf --appendonly no --daemonize yes
      in_wait_port 6379 30 || in_fail "the stock Redis did not start"
      pg_ctlcluster 15 main start
      [ "$(in_aof 6379)" = no ] || in_fail "precondition: the Redis on 6379 should run without AOF"
      in_pg_login 5432 || in_fail "precondition: postgres should log in to 5432 without a password"
      ;;
    b)
      pg_ctlcluster 15 main start
      in_listening 5432 || in_fail "precondition: the cluster should listen on 5432"
      ! in_pg_login 5432 || in_fail "precondition: the cluster on 5432 should want a password"
      ! in_listening 6379 || in_fail "precondition: nothing should listen on 6379"
      ;;
    c)
      [ "$(in_cluster 5432)" = down ] || in_fail "precondition: a stopped cluster should be configured on 5432"
      ! in_listening 5432 || in_fail "precondition: nothing should listen on 5432"
      ;;
    e)
      [ "$(in_cluster 5432)" = down ] || in_fail "precondition: a stopped cluster should be configured on 5432"
      ! in_listening 5432 || in_fail "precondition: nothing should listen on 5432"
      ! in_listening 6379 || in_fail "precondition: nothing should listen on 6379"
      ;;
    d)
      for tool in redis-server redis-cli psql pg_lsclusters; do
        ! command -v "$tool" >/dev/null || in_fail "precondition: $tool should not be installed"
      done
      ;;
  esac
  for port in 6380 5433 9092; do ! in_listening "$port" || in_fail "precondition: nothing should listen on $port"; done
}

# $1 scenario, $2 expected "redis postgres" ports, $3 ports services.sh starts, $4 stock ports.
in_scenario() {
  local scenario=$1 expect=$2 ours=$3 stock=$4 redis_port pg_port port first
  cd /root/fcfs-coupon
  in_step "the machine"
  in_machine "$scenario"

  in_step "scripts/services.sh up"
  scripts/services.sh up || in_fail "services.sh up exited $?"
  # shellcheck disable=SC1091
  source "$HOME/.local/state/fcfs-coupon/env"
  redis_port=$(echo "$APP_REDIS__URL" | sed -E 's#^redis://127\.0\.0\.1:([0-9]+)$#\1#')
  pg_port=$(echo "$APP_DATABASE__URL" | sed -E 's#^postgres://postgres@127\.0\.0\.1:([0-9]+)/fcfs$#\1#')
  echo "DECIDED redis $redis_port, postgres $pg_port, kafka 9092"
  [ "$(in_aof "$redis_port")" = yes ] || in_fail "$APP_REDIS__URL: not a Redis with AOF that answers without a password"
  in_pg_login "$pg_port" || in_fail "postgres cannot log in to 127.0.0.1:$pg_port without a password"
  in_listening 9092 || in_fail "nothing listens on 9092"
  # A Debian cluster configured on the port in use must be the server there: a private one
  # in its place would collide with it at the next boot.
  case $(in_cluster "$pg_port") in
    "" | online) ;;
    *) in_fail "a private server took port $pg_port from the stopped cluster configured there" ;;
  esac
  [ "$redis_port $pg_port" = "$expect" ] || in_fail "services.sh chose redis $redis_port, postgres $pg_port; expected $expect"
  for port in $stock; do in_listening "$port" || in_fail "the machine's own server on $port was stopped"; done
  case $scenario in
    a) [ "$(in_aof 6379)" = no ] || in_fail "the stock Redis on 6379 was reconfigured" ;;
    b) ! in_pg_login 5432 || in_fail "the cluster on 5432 was reconfigured" ;;
    c)
      [ "$(in_cluster 5432)" = down ] || in_fail "the cluster on 5432 wants a password and should be stopped again"
      ! in_listening 5432 || in_fail "something still listens on 5432"
      ;;
  esac

  in_step "scripts/services.sh up, again"
  first=$(cat "$HOME/.local/state/fcfs-coupon/env")
  scripts/services.sh up || in_fail "the second services.sh up exited $?"
  [ "$(cat "$HOME/.local/state/fcfs-coupon/env")" = "$first" ] || in_fail "the second services.sh up chose other places"

  in_step "fcfs-coupon serve (APP_ENV=development) until ready"
  APP_ENV=development setsid nohup fcfs-coupon serve >/tmp/app.log 2>&1 </dev/null &
  local app=$! deadline=$((SECONDS + 180))
  until curl -fsS http://127.0.0.1:8080/health/ready >/tmp/ready.json 2>/tmp/ready.err; do
    if ! kill -0 "$app" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 /tmp/app.log
      in_fail "the service never answered ready: $(cat /tmp/ready.err /tmp/ready.json 2>/dev/null | tr '\n' ' ')"
    fi
    sleep 1
  done
  echo "ready: $(cat /tmp/ready.json)"
  kill "$app"
  for _ in $(seq 100); do kill -0 "$app" 2>/dev/null || break; sleep 0.2; done

  in_step "scripts/services.sh down"
  scripts/services.sh down || in_fail "services.sh down exited $?"
  for port in $ours; do ! in_listening "$port" || in_fail "services.sh down left its server on $port running"; done
  for port in $stock; do in_listening "$port" || in_fail "services.sh down stopped the machine's own server on $port"; done
  echo "PASSED"
}

# --- The harness on the host -------------------------------------------------------------------

container_name() { echo "fcfs-stock-machine-${NAME[$1]}-$$"; }

# Runs one scenario; its log to $OUT_DIR/<name>.log, "<exit status> <seconds>" to $OUT_DIR/<name>.rc.
run_scenario() {
  local scenario=$1 name=${NAME[$1]} ctr log rc=0 start
  ctr=$(container_name "$scenario")
  log="$OUT_DIR/$name.log"
  start=$(date +%s)
  local mounts=(-v "$PWD/scripts:/root/fcfs-coupon/scripts:ro" -v "$BIN:/usr/local/bin/fcfs-coupon:ro" -v "$TANSU:/usr/local/bin/tansu:ro")
  # (d) downloads its packages: keep the .debs between runs (apt still installs every one).
  [ "$scenario" = d ] && mkdir -p "$OUT_DIR/apt-archives" && mounts+=(-v "$OUT_DIR/apt-archives:/var/cache/apt/archives")
  {
    # --init reaps what services.sh daemonizes once its parent shell is gone.
    docker run -d --init --name "$ctr" --hostname "stock-$name" "${mounts[@]}" \
      "fcfs-stock-machine:${IMAGE[$scenario]}" sleep infinity >/dev/null &&
      { declare -f in_listening in_fail in_step in_aof in_pg_login in_cluster in_wait_port in_machine in_scenario
        printf 'in_scenario %q %q %q %q\n' "$scenario" "${EXPECT[$scenario]}" "${OURS[$scenario]}" "${STOCK[$scenario]}"
      } | timeout "$SCENARIO_TIMEOUT" docker exec -i "$ctr" bash -uo pipefail -s
  } >"$log" 2>&1 || rc=$?
  echo "$rc $(($(date +%s) - start))" >"$OUT_DIR/$name.rc"
  docker rm -f "$ctr" >/dev/null 2>&1 || true
}

report() {
  local scenario=$1 name=${NAME[$1]} rc seconds decided alone why
  read -r rc seconds <"$OUT_DIR/$name.rc"
  decided=$(sed -n 's/^DECIDED //p' "$OUT_DIR/$name.log" | head -n 1)
  alone=${STOCK[$scenario]:+left alone: ${STOCK[$scenario]// /, }}
  if [ "$rc" = 0 ] && grep -qx PASSED "$OUT_DIR/$name.log"; then
    printf 'PASS  %s %-16s %-38s %-24s %4ss\n' "$scenario" "$name" "${decided:-?}" "$alone" "$seconds"
    return 0
  fi
  why=$(sed -n 's/^FAIL: //p' "$OUT_DIR/$name.log" | head -n 1)
  [ "$rc" = 124 ] && why="timed out after ${SCENARIO_TIMEOUT}s${why:+; $why}"
  printf 'FAIL  %s %-16s %-38s %-24s %4ss  %s (log: %s)\n' "$scenario" "$name" \
    "${decided:-(services.sh did not finish)}" "$alone" "$seconds" "${why:-exit $rc}" "$OUT_DIR/$name.log"
  return 1
}

cleanup() {
  local pids scenario
  pids=$(jobs -p)
  # shellcheck disable=SC2086 # one pid a word
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  for scenario in "${scenarios[@]}"; do docker rm -f "$(container_name "$scenario")" >/dev/null 2>&1 || true; done
  # A dockerd this run started is stopped again; one that was running is left as it was.
  [ -z "${our_dockerd:-}" ] || docker_down
}

# --- Main --------------------------------------------------------------------------------------

our_dockerd=""
docker info >/dev/null 2>&1 || our_dockerd=1
trap cleanup EXIT
trap 'exit 130' INT TERM
docker_up || die "no Docker engine (see $DOCKER_STATE_DIR/dockerd.log)"

# The service as the host builds it (the containers run the same Debian, so its glibc fits).
if [ -n "${FCFS_BIN:-}" ]; then
  BIN=$(realpath "$FCFS_BIN")
else
  ensure_build_tools
  cargo build --release --locked -p fcfs-coupon
  BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/fcfs-coupon")
fi
# Tansu as services.sh pins it, built here once (no cargo in the containers).
TANSU=$(realpath "${TANSU_BIN:-$(scripts/services.sh tansu)}")
for binary in "$BIN" "$TANSU"; do [ -x "$binary" ] || die "missing $binary"; done

build_images
mkdir -p "$OUT_DIR"
say "scenarios ${scenarios[*]}${serial:+ (one after another)}; logs in $OUT_DIR"
for scenario in "${scenarios[@]}"; do
  if [ -n "$serial" ]; then run_scenario "$scenario"; else run_scenario "$scenario" & fi
done
wait

failed=0
for scenario in "${scenarios[@]}"; do report "$scenario" || failed=1; done
for scenario in "${scenarios[@]}"; do
  if ! grep -qx PASSED "$OUT_DIR/${NAME[$scenario]}.log"; then
    echo "--- the end of $OUT_DIR/${NAME[$scenario]}.log" >&2
    tail -n 25 "$OUT_DIR/${NAME[$scenario]}.log" >&2
  fi
done
exit "$failed"
