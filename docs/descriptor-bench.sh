#!/usr/bin/env bash
# Two udsecho-server builds, interleaved, under loadgen (raw, one serving thread, 64 B ping-pong):
# server pinned to core 0, loadgen to core 1. What performance.md's "Passed descriptors" table
# measured: per run, round trips/s and the server's CPU µs per round trip. Usage, after `cargo build --release -p loadgen` and building both servers:
#   flock /tmp/udsecho-build.lock docs/descriptor-bench.sh OLD_SERVER NEW_SERVER [LOADGEN]
set -u
OLD=$1; NEW=$2; LG=${3:-target/release/loadgen}
for conns in 1 100 1000; do
 for run in 1 2 3; do
  for v in old new; do
   bin=$OLD; [ $v = new ] && bin=$NEW
   d=$(mktemp -d /tmp/ab.XXXX)
   taskset -c 0 "$bin" -q --mode raw --threads 1 -s $d/s.sock & pid=$!
   for _ in $(seq 100); do [ -S $d/s.sock ] && break; sleep 0.02; done
   out=$(taskset -c 1 "$LG" -s $d/s.sock -c $conns --duration 2s --warmup 0.5s --server-pid $pid --json)
   kill $pid; wait $pid 2>/dev/null
   echo "$v $conns $(echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["round_trips_per_sec"]), round(j["server"]["us_per_round_trip"], 2))')"
   rm -rf $d
  done
 done
done
