#!/usr/bin/env bash
# boost.sh CORE NICE CMD...: runs CMD pinned to CORE at NICE, for `bench.sh inline`.
# Run it under setsid: the machine schedules with autogroups (one per session), so a plain nice
# only ranks a process within its own session's group and neighbours' builds still take most of
# the core. A session of its own gives CMD a group of its own, and that group gets the nice too.
# Both last only as long as CMD (seconds per phase).
# RG_PIDFILE=F: writes this process's PID to F before exec'ing, which CMD keeps: the caller's
# handle on CMD whether or not setsid had to fork to start it.
set -euo pipefail
core=$1 nice=$2
shift 2
if [[ -w /proc/self/autogroup ]]; then echo "$nice" >/proc/self/autogroup || true; fi
if [[ -n ${RG_PIDFILE:-} ]]; then echo $$ >"$RG_PIDFILE.tmp" && mv "$RG_PIDFILE.tmp" "$RG_PIDFILE"; fi
exec taskset -c "$core" nice -n "$nice" "$@"
