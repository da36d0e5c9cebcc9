#!/usr/bin/env bash
# Per-thread efficiency of `udsecho-client bench` against the project's loadgen: the epoll
# reference pinned to core 0, each generator pinned to core 1 with one thread, 64 B ping-pong at
# 1, 100 and 1,000 connections, RUNS interleaved runs of SECONDS each; then both generators at
# --threads 2, unpinned (the server still on core 0). Per run: round trips/s, the generator's CPU
# µs per round trip (user + system of the whole process, from wait4, connects included, over the
# round trips it reports) and the server's (from /proc/PID/stat). Medians at the end.
# Usage, after `cargo build --release -p udsecho-client -p loadgen -p epoll-echo`:
#   flock /tmp/udsecho-build.lock docs/client-bench.sh [RUNS] [SECONDS]
set -euo pipefail
runs=${1:-3}; secs=${2:-3}
rel=${TARGET_DIR:-target}/release
dir=$(mktemp -d /tmp/cb.XXXX); sock=$dir/s.sock; srv=
trap '[ -n "$srv" ] && kill $srv 2>/dev/null; rm -rf "$dir"' EXIT
ticks() { awk '{print $14 + $15}' /proc/$srv/stat; }
one() { # GEN CONNS THREADS PIN
  local gen=$1 conns=$2 threads=$3 pin=$4 out rt s0 s1
  taskset -c 0 "$rel/epoll-echo" "$sock" & srv=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.02; done
  s0=$(ticks)
  local run=(/usr/bin/time -f '%U %S' -o "$dir/time")
  [ "$pin" = pin ] && run=(taskset -c 1 "${run[@]}")
  if [ "$gen" = loadgen ]; then
    out=$("${run[@]}" "$rel/loadgen" -s "$sock" -c "$conns" --threads "$threads" \
      --duration "${secs}s" --warmup 0s --json)
  else
    out=$("${run[@]}" "$rel/udsecho-client" -s "$sock" bench -c "$conns" --threads "$threads" \
      -d "${secs}s" --json)
  fi
  s1=$(ticks); kill $srv; wait $srv 2>/dev/null || true; srv=
  python3 - "$gen" "$conns" "$threads" "$pin" "$(cat "$dir/time")" $((s1 - s0)) "$out" <<'EOF'
import json, sys
gen, conns, threads, pin, cpu, server_ticks, out = sys.argv[1:]
r = json.loads(out)
trips, seconds = r["round_trips"], r["seconds"]
gen_us = sum(map(float, cpu.split())) / trips * 1e6
srv_us = int(server_ticks) / 100 / trips * 1e6
print(f"{gen}\t{conns}\t{threads}\t{pin}\t{trips / seconds:.0f}\t{gen_us:.3f}\t{srv_us:.3f}")
EOF
}
{
  for conns in 1 100 1000; do
    for _ in $(seq "$runs"); do
      for gen in loadgen client; do one $gen $conns 1 pin; done
    done
  done
  for conns in 100 1000; do
    for _ in $(seq "$runs"); do
      for gen in loadgen client; do one $gen $conns 2 free; done
    done
  done
} | tee "$dir/runs.tsv"
python3 - "$dir/runs.tsv" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    gen, conns, threads, pin, rate, gen_us, srv_us = line.split()
    rows.setdefault((int(threads), int(conns), gen), []).append((float(rate), float(gen_us), float(srv_us)))
print("threads conns generator  round-trips/s  gen-us/rt  server-us/rt  (medians)")
for (threads, conns, gen), v in sorted(rows.items()):
    med = [statistics.median(x[i] for x in v) for i in range(3)]
    print(f"{threads:7} {conns:5} {gen:9} {med[0]:14,.0f} {med[1]:10.2f} {med[2]:13.2f}")
EOF
