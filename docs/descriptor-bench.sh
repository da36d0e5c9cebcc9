#!/usr/bin/env bash
# Interleaved old/new udsecho-server (raw, 1 thread) under loadgen, pinned: server core 0, loadgen core 1.
set -u
LG=/work/wt-seams/target/release/loadgen
cp /work/wt-seams/target/release/udsecho-server /tmp/srv-old
cp /work/main/target/release/udsecho-server /tmp/srv-new
for conns in 1 100 1000; do
 for run in 1 2 3; do
  for v in old new; do
   d=$(mktemp -d /tmp/ab.XXXX)
   taskset -c 0 /tmp/srv-$v -q --mode raw --threads 1 -s $d/s.sock & pid=$!
   for _ in $(seq 100); do [ -S $d/s.sock ] && break; sleep 0.02; done
   out=$(taskset -c 1 $LG -s $d/s.sock -c $conns --duration 2s --warmup 0.5s --server-pid $pid --json)
   kill $pid; wait $pid 2>/dev/null
   echo "$v $conns $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r.get("round_trips_per_sec",0)), {k:v for k,v in r.items() if "cpu" in k})')"
   rm -rf $d
  done
 done
done
