#!/usr/bin/env bash
# Two release builds of medchain measured back to back, alternated, in one run (BENCHMARKS.md).
#   scripts/bench-compare.sh BEFORE AFTER cost    # issue 10's cost: embedded, processes, latency
#   scripts/bench-compare.sh BEFORE AFTER table   # issue 11's table: 20 s and 120 s embedded
# BEFORE and AFTER are paths of `medchain` binaries (e.g. copies of target/release/medchain
# built at two commits). Prints each run's summary (the lines of bench's output before issue 11
# and the table it ends with since) and /usr/bin/time's CPU, peak RSS and blocks written ("fs
# outputs", 512-byte units).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 BEFORE AFTER cost|table" >&2; exit 2; }
before=$1 after=$2 suite=$3
run() {
  echo "### $*"
  /usr/bin/time -f "cpu user %U s, sys %S s, wall %e s, max rss %M KB, fs outputs %O x512 B" \
    "$@" 2>&1 |
    grep -E "^(committed|commit latency|grant latency|key service|cpu user|acknowledged|lost|latency p50|CPU per tx|written per tx|write amplification|peak RSS|chain.db per|[0-9]+ blocks;)"
}
pair() { for binary in "$before" "$after"; do run "$binary" bench "$@"; done; }
case $suite in
  cost)
    for _ in 1 2; do pair --duration 20s --batch-window 10ms; done
    for _ in 1 2; do pair --processes --duration 10s --batch-window 10ms; done
    pair --rate 1000 --duration 10s --batch-window 10ms
    ;;
  table)
    pair --duration 20s --batch-window 10ms
    pair --duration 120s --batch-window 10ms
    ;;
  *) echo "unknown suite $suite: cost or table" >&2; exit 2 ;;
esac
