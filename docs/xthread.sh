#!/usr/bin/env bash
# Cross-thread traffic on the data path: futex calls, epoll_wait calls and context switches per
# round trip, for a server binary and a --threads value. Usage: xthread.sh BIN THREADS [CONNS]
set -euo pipefail
bin=$1; threads=$2; conns=${3:-100}
dir=$(mktemp -d /tmp/xt.XXXX); sock=$dir/s.sock
$bin -q --mode raw --threads "$threads" --socket "$sock" & pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
ctx() { cat /proc/$pid/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
c0=$(ctx)
perf stat -x, -e 'syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto' -p $pid -o $dir/perf.txt -- sleep 4 &
perfpid=$!
out=$(${LOADGEN:-target/release/loadgen} -s "$sock" -c "$conns" --duration 3s --warmup 500ms --json)
wait $perfpid
c1=$(ctx)
kill -TERM $pid; wait $pid || true
rt=$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("round_trips") or d.get("messages") or d)')
echo "bin=$bin threads=$threads conns=$conns round_trips(3s window)=$rt ctxsw=$((c1-c0))"
grep -v '^#' $dir/perf.txt | awk -F, 'NF>2 {print "  " $3 ": " $1}'
rm -rf "$dir"
