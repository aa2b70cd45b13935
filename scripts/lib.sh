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
