# Shared helpers for the project's scripts. Source it; it defines functions only.

say() { printf '[%s] %s\n' "${SCRIPT_NAME:-fcfs}" "$*" >&2; }

die() {
  say "error: $*"
  exit 1
}

# Runs a command as root (directly, or through sudo when the caller is not root).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  if [ -z "$APT_UPDATED" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  say "installing OS packages: $*"
  # No recommends: docker-compose would pull in the whole Docker engine.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What building the crate needs beyond Rust: rdkafka compiles its bundled librdkafka with cmake.
# librdkafka 2.12.1's CMake build writes `#define WITH_OAUTHBEARER_OIDC 0` and one file tests it
# with #ifdef, so curl's header is included (never linked) even with curl off: hence libcurl-dev.
ensure_build_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  compgen -G "/usr/include/curl/curl.h" >/dev/null || compgen -G "/usr/include/*/curl/curl.h" >/dev/null \
    || missing+=(libcurl4-openssl-dev)
  command -v c++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  # librdkafka is built with OpenSSL, for Kafka over TLS (APP_KAFKA__PROPERTIES__SECURITY_PROTOCOL).
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME PORT SECONDS [LOG]
wait_for() {
  local name=$1 port=$2 seconds=$3 log=${4:-}
  local deadline=$((SECONDS + seconds))
  until listening "$port"; do
    if [ $SECONDS -ge "$deadline" ]; then
      [ -n "$log" ] && [ -f "$log" ] && tail -n 20 "$log" >&2
      die "$name did not start listening on 127.0.0.1:$port within ${seconds}s${log:+ (log: $log)}"
    fi
    sleep 0.2
  done
}

# Build tools, the local services, and a release build: what running the service needs.
# Starts the services and reads where they are (APP_REDIS__URL, APP_DATABASE__URL).
services_up() {
  scripts/services.sh up
  # shellcheck disable=SC1091
  source "${FCFS_SERVICES_DIR:-$HOME/.local/state/fcfs-coupon}/env"
}

prepare_release() {
  ensure_build_tools
  services_up
  cargo build --release --locked
}

# --- Docker: the compose stack (scripts/compose.sh) and the stock-machine checks -----------------

DOCKER_STATE_DIR="${FCFS_SERVICES_DIR:-$HOME/.local/state/fcfs-coupon}/docker"

# The engine, its client, docker-compose (v1, Debian's) and mmdebstrap; dockerd started only when
# none answers, and remembered as ours so that docker_down stops that one and no other.
docker_up() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  docker info >/dev/null 2>&1 && return 0
  mkdir -p "$DOCKER_STATE_DIR"
  say "docker: starting dockerd (log $DOCKER_STATE_DIR/dockerd.log)"
  (setsid nohup dockerd >"$DOCKER_STATE_DIR/dockerd.log" 2>&1 </dev/null & echo $! >"$DOCKER_STATE_DIR/dockerd.pid")
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ $SECONDS -ge "$deadline" ] || ! kill -0 "$(cat "$DOCKER_STATE_DIR/dockerd.pid")" 2>/dev/null; then
      tail -n 20 "$DOCKER_STATE_DIR/dockerd.log" >&2
      rm -f "$DOCKER_STATE_DIR/dockerd.pid"
      return 1
    fi
    sleep 0.5
  done
}

# Stops dockerd if docker_up started it.
docker_down() {
  local pidfile="$DOCKER_STATE_DIR/dockerd.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  rm -f "$pidfile"
  say "docker: stopped the dockerd this script started"
}

# Prints the base image every image of ours is built on: $BASE_IMAGE when set; else
# debian:bookworm-slim when it is here or a registry serves it; else one made once from Debian's
# packages with mmdebstrap (about 70 s) and kept as fcfs-coupon-base:bookworm.
base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  local official=debian:bookworm-slim made=fcfs-coupon-base:bookworm
  if docker image inspect "$official" >/dev/null 2>&1 || timeout 120 docker pull -q "$official" >/dev/null 2>&1; then
    echo "$official"; return
  fi
  if ! docker image inspect "$made" >/dev/null 2>&1; then
    say "docker: no registry answers; making $made from Debian's packages with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm - | docker import - "$made" >/dev/null
  fi
  echo "$made"
}
