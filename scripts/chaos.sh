#!/usr/bin/env bash
# The randomized fault checker's long mode (tests/api/chaos): random schedules against real
# Redis, PostgreSQL and Tansu, as scripts/test.sh runs the suite. One line per schedule, then
# schedules clean / failed per fault kind. Every failing schedule prints its seed; replay it with
#   FCFS_CHAOS_SEED=<seed> cargo test --test api chaos::replay -- --ignored --nocapture
#
#   scripts/chaos.sh --seeds 200        # 200 schedules
#   scripts/chaos.sh --minutes 30       # as many as fit in 30 minutes
#   scripts/chaos.sh --seeds 200 --minutes 30   # whichever comes first
set -euo pipefail
SCRIPT_NAME=chaos
cd "$(dirname "$0")/.."
source scripts/lib.sh
# Tests run on secrets of their own; the service processes they start run as development.
export APP_ENV=development

seeds="" minutes=""
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) seeds=${2:?--seeds needs a number}; shift 2 ;;
    --minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
[[ -z $seeds || $seeds =~ ^[0-9]+$ ]] || die "--seeds wants a whole number, not $seeds"
[[ -z $minutes || $minutes =~ ^[0-9]+$ ]] || die "--minutes wants a whole number, not $minutes"
if [ -z "$seeds$minutes" ]; then seeds=20; fi

ensure_build_tools
services_up
[ -n "$seeds" ] && export FCFS_CHAOS_SEEDS=$seeds
[ -n "$minutes" ] && export FCFS_CHAOS_MINUTES=$minutes
say "searching fault schedules: ${seeds:+$seeds schedules}${seeds:+${minutes:+ or }}${minutes:+$minutes minutes}"
cargo test --locked --test api chaos::search -- --ignored --nocapture
