#!/usr/bin/env bash
# The compose stack (docker-compose.yml), in production mode, on this machine.
#
#   scripts/compose.sh up [--replicas N]   secrets made once, images built, the stack up and
#                                          every service healthy; prints where things are
#   scripts/compose.sh token --user N [--admin]   a token minted inside the stack
#   scripts/compose.sh test                a black-box run against the published ports
#                                          (tests/compose/blackbox.py), then down
#   scripts/compose.sh down                removes the containers, networks and volumes the
#                                          stack made (images and secrets stay, for next time)
#
# Installs what it needs (docker.io, docker-compose, mmdebstrap) and starts dockerd only when none
# answers (`down` stops only that one). Where no image registry answers, the same services are
# built from Debian's packages (docker-compose.offline.yml, BASE_IMAGE); FCFS_COMPOSE_OFFLINE=1
# or 0 decides by hand.
set -euo pipefail
SCRIPT_NAME=compose
cd "$(dirname "$0")/.."
source scripts/lib.sh

export COMPOSE_PROJECT_NAME=fcfs-coupon
SECRETS=.compose/secrets
# The verifier key of the stack's fairness log: public, what `verify --key` pins.
VERIFIER_KEY=.compose/fairness-verifier-key
FILES=(-f docker-compose.yml)

compose() { docker-compose "${FILES[@]}" "$@"; }

registry_answers() {
  case "${FCFS_COMPOSE_OFFLINE:-}" in
    1) return 1 ;;
    0) return 0 ;;
  esac
  docker image inspect redis:7.2-alpine >/dev/null 2>&1 || timeout 120 docker pull -q redis:7.2-alpine >/dev/null 2>&1
}

# Offline: the override, a base image, and the two binaries the images copy in.
choose_stack() {
  if registry_answers; then
    say "an image registry answers: official images, Apache Kafka"
    return
  fi
  FILES+=(-f docker-compose.offline.yml)
  BASE_IMAGE=$(base_image)
  export BASE_IMAGE
  say "no image registry answers: images from Debian's packages on $BASE_IMAGE, Tansu for Kafka"
  ensure_build_tools
  cargo build --release --locked -p fcfs-coupon
  mkdir -p .compose/bin
  # The broker image takes the Tansu the scripts build (once per machine, about 10 minutes).
  install -m 755 "$(scripts/services.sh tansu)" .compose/bin/tansu
}

# 32 random bytes as hex: safe in a URL and a config file as they are.
random_hex() { head -c 32 /dev/urandom | od -An -tx1 -v | tr -d ' \n'; }

# Each secret once, on the first `up`: the next `up` finds the same ones. The folder is the
# owner's only; the files are readable, because each container's user (redis, postgres, fcfs)
# reads its own at /run/secrets/.
make_secrets() {
  # New secrets beside an old stack's volumes would not match the logins made in them.
  if [ ! -s "$SECRETS/postgres_password" ] &&
    docker volume inspect "${COMPOSE_PROJECT_NAME}_postgres-data" >/dev/null 2>&1; then
    die "the stack's volumes remain but its secrets ($SECRETS) are gone: restore them, or remove the volumes (scripts/compose.sh down)"
  fi
  if [ -s "$SECRETS/fairness_signing_key" ] && [ ! -s "$VERIFIER_KEY" ]; then
    die "$VERIFIER_KEY is missing: restore it (it is what customers pin), or remove $SECRETS/fairness_signing_key to make a new pair"
  fi
  mkdir -p "$SECRETS"
  chmod 700 .compose "$SECRETS"
  local name
  for name in jwt_secret redis_password postgres_password postgres_owner_password \
    postgres_app_password grafana_admin_password; do
    [ -s "$SECRETS/$name" ] || (umask 022 && random_hex >"$SECRETS/$name")
  done
  (
    umask 022
    printf 'requirepass %s\n' "$(cat "$SECRETS/redis_password")" >"$SECRETS/redis.conf"
    printf 'redis://:%s@redis:6379\n' "$(cat "$SECRETS/redis_password")" >"$SECRETS/redis_url"
    printf 'postgres://fcfs_owner:%s@postgres:5432/fcfs\n' "$(cat "$SECRETS/postgres_owner_password")" \
      >"$SECRETS/database_owner_url"
    printf 'postgres://fcfs_app:%s@postgres:5432/fcfs\n' "$(cat "$SECRETS/postgres_app_password")" \
      >"$SECRETS/database_url"
  )
}

# The fairness log's key pair, by the service's own generator in the image just built; no log
# driver, so the private key is in no container log.
make_signing_key() {
  [ -s "$SECRETS/fairness_signing_key" ] && return
  (
    umask 022
    docker run --rm --log-driver none fcfs-coupon:compose fairness-key --name fcfs-coupon.compose \
      >"$SECRETS/fairness_signing_key.part" 2>"$VERIFIER_KEY.part"
    mv "$SECRETS/fairness_signing_key.part" "$SECRETS/fairness_signing_key"
    sed -n 's/^verifier key: //p' "$VERIFIER_KEY.part" >"$VERIFIER_KEY"
    rm -f "$VERIFIER_KEY.part"
  )
}

# Every container of the stack healthy (the migrate job exited 0) and as many app replicas as
# asked; at once non-zero on a container that exited otherwise, else at the deadline.
wait_healthy() {
  local seconds=$1 replicas=$2 deadline=$(($SECONDS + $1)) id service status health code pending apps
  while :; do
    pending="" apps=0
    for id in $(compose ps -q); do
      read -r service status health code < <(docker inspect -f \
        '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
      [ "$service" = app ] && apps=$((apps + 1))
      case "$service $status $health $code" in
        "migrate exited "*" 0") ;;
        *" exited "* | *" dead "*)
          say "$service exited with code $code"
          compose logs --tail=40 "$service" >&2
          return 1 ;;
        *" running healthy "*) ;;
        *) pending+=" $service($status, health $health)" ;;
      esac
    done
    [ "$apps" -ge "$replicas" ] || pending+=" app($apps of $replicas replicas)"
    [ -z "$pending" ] && return 0
    if [ $SECONDS -ge "$deadline" ]; then
      say "not healthy after $seconds s:$pending"
      compose ps >&2
      compose logs --tail=30 >&2
      return 1
    fi
    sleep 1
  done
}

up() {
  local replicas=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --replicas) replicas=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  docker_up || die "no Docker engine could be started (see above)"
  choose_stack
  make_secrets
  say "building images"
  compose build -q
  make_signing_key
  local started=$SECONDS
  compose up -d --scale app="$replicas"
  wait_healthy 300 "$replicas"
  COMPOSE_HEALTHY_SECS=$((SECONDS - started))
  local port
  for port in $(seq 8080 $((8080 + replicas - 1))); do
    say "app: Swagger UI http://127.0.0.1:$port/docs, live dashboard http://127.0.0.1:$port/dashboard"
  done
  say "Prometheus (alerts): http://127.0.0.1:9090"
  if [[ " ${FILES[*]} " == *offline* ]]; then
    say "Grafana: not in the offline stack (no Debian package); deploy/grafana/ is checked statically"
  else
    say "Grafana dashboard: http://127.0.0.1:3000"
  fi
  say "a token: scripts/compose.sh token --user 1 --admin; secrets in $SECRETS/"
  say "healthy in ${COMPOSE_HEALTHY_SECS} s"
}

# The stack's containers, networks and volumes; images and secrets stay for the next `up`.
stack_down() {
  docker info >/dev/null 2>&1 || return 0
  # Both files and every profile, so whichever stack ran is found; nothing here pulls or builds.
  docker-compose -f docker-compose.yml -f docker-compose.offline.yml --profile registry \
    down -v --remove-orphans
}

down() {
  stack_down
  docker_down
}

# Compose finds the running container by project and service: the main file is enough,
# whichever stack is up.
token() {
  compose exec -T app fcfs-coupon token "$@"
}

test_stack() {
  local replicas=3
  # A stack left over from an interrupted run would skew the figures.
  stack_down >/dev/null 2>&1 || true
  trap 'say "leaving: taking the stack down"; down' EXIT
  up --replicas "$replicas"
  say "check-config with the stack's environment"
  compose exec -T app fcfs-coupon check-config >/dev/null
  say "no secret in an image, a container's configuration or the logs"
  local seen secret value
  seen=$(docker inspect $(compose ps -q) && docker history --no-trunc fcfs-coupon:compose && compose logs --no-color)
  for secret in "$SECRETS"/*; do
    while IFS= read -r value; do
      [ -n "$value" ] || continue
      ! grep -qF -- "$value" <<<"$seen" || die "a line of $secret is visible in docker inspect, the image's history or the logs"
    done <"$secret"
  done
  local figures
  figures=$(ADMIN_TOKEN="$(token --user 1 --admin)" python3 tests/compose/blackbox.py \
    --apps "$(seq -s, 8080 $((8080 + replicas - 1)))" \
    --prometheus http://127.0.0.1:9090 \
    --jwt-secret-file "$SECRETS/jwt_secret" \
    --verifier-key "$(cat "$VERIFIER_KEY")" \
    --redis-container "$(compose ps -q redis)" \
    --recreate-redis "docker-compose ${FILES[*]} up -d --no-deps redis" \
    --verify-image fcfs-coupon:compose \
    --healthy-secs "$COMPOSE_HEALTHY_SECS")
  trap - EXIT
  stack_down
  local left
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
    docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
    docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
  [ -z "$left" ] || die "down left something behind: $left"
  say "down: no container, network or volume of the stack is left"
  docker_down
  echo "$figures"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  token) shift; token "$@" ;;
  test) test_stack ;;
  *) echo "usage: $0 up [--replicas N] | token --user N [--admin] | test | down" >&2; exit 2 ;;
esac
