#!/usr/bin/env bash
# Throughput of a master with one replica attached, Carmine against Redis, in one run.
#
#     benches/scripts/replica_throughput.sh target/release/carmine-server [redis-server]
#
# For each implementation: a master pinned to CPU 0 and a replica of the same kind pinned
# to CPU 1 (with redis-benchmark, as throughput.sh pins its client); the replica is in
# sync before the benchmark starts. redis-benchmark -P 16 -c 50 -r 100000 -d 3 for
# SET, GET, INCR, LPUSH, HSET, ROUNDS rounds (default 3) alternating the two, medians of
# requests/s. NO_REPLICA=1 runs the same without replicas. LOADGEN=target/release/loadgen
# loads the masters with it (SECONDS_EACH seconds a test, default 3) instead of
# redis-benchmark, which costs CPU 1 more than the replica does: there the two share a
# core, and redis-benchmark's share is the same whichever server it loads. Everything
# binds 127.0.0.1; every process is stopped on exit.
#
# On a machine with cores to spare, MASTER_CPU (default 0), REPLICA_CPU (1) and
# CLIENT_CPUS (1; a taskset list such as 2-15) place the three apart, and BENCH_THREADS
# gives redis-benchmark (--threads) or loadgen (--threads) that many threads, so that
# neither the client nor a core shared with it limits the masters.
set -euo pipefail
CAND=${1:?usage: $0 CANDIDATE_BIN [REFERENCE_BIN]}
REF=${2:-redis-server}
ROUNDS=${ROUNDS:-3}
N=${N:-400000}
TESTS=${TESTS:-set,get,incr,lpush,hset}
MASTER_CPU=${MASTER_CPU:-0}
REPLICA_CPU=${REPLICA_CPU:-1}
CLIENT_CPUS=${CLIENT_CPUS:-1}
BENCH_THREADS=${BENCH_THREADS:-}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() { # bin cpu port dir [args...]
    local bin=$1 cpu=$2 port=$3 dir=$4
    shift 4
    mkdir -p "$dir"
    taskset -c "$cpu" "$bin" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" "$@" >"$dir/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "server $bin on $port did not start" >&2
    exit 1
}

pair() { # name bin -> sets MP (master port) and RP (replica port)
    local name=$1 bin=$2
    MP=$(free_port)
    RP=$(free_port)
    start "$bin" "$MASTER_CPU" "$MP" "$DIR/$name-master" --repl-diskless-sync-delay 0
    if [ -n "${NO_REPLICA:-}" ]; then
        return 0
    fi
    start "$bin" "$REPLICA_CPU" "$RP" "$DIR/$name-replica" --replicaof 127.0.0.1 "$MP"
    for _ in $(seq 1 200); do
        redis-cli -p "$RP" info replication | grep -q 'master_link_status:up' && return 0
        sleep 0.05
    done
    echo "replica of $name did not sync" >&2
    exit 1
}

pair cand "$CAND"
CM=$MP CR=$RP
pair ref "$REF"
RM=$MP RR=$RP
# One "TEST,requests/s" line per test against the master on port $1.
measure() {
    local port=$1 test
    if [ -z "${LOADGEN:-}" ]; then
        local threads=()
        [ -n "$BENCH_THREADS" ] && threads=(--threads "$BENCH_THREADS")
        taskset -c "$CLIENT_CPUS" redis-benchmark -p "$port" -P 16 -c 50 -r 100000 -d 3 \
            -n "$N" -t "$TESTS" "${threads[@]}" --csv 2>/dev/null
        return
    fi
    for test in $(echo "$TESTS" | tr ',' ' '); do
        echo "$(echo "$test" | tr a-z A-Z),$(taskset -c "$CLIENT_CPUS" "$LOADGEN" \
            --port "$port" --pipeline 16 --clients 50 --threads "${BENCH_THREADS:-1}" \
            --seconds "${SECONDS_EACH:-3}" --test "$test" | grep -oE '^[0-9]+')"
    done
}
declare -A results
for round in $(seq 1 "$ROUNDS"); do
    for who in cand ref; do
        port=$CM
        [ "$who" = ref ] && port=$RM
        while IFS=, read -r test rps _; do
            test=${test//\"/}
            rps=${rps//\"/}
            [ "$test" = test ] && continue
            results["$who,$test"]+="$rps "
        done < <(measure "$port")
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| command | Carmine rps | Redis rps | ratio |"
echo "| --- | --- | --- | --- |"
for t in $(echo "$TESTS" | tr ',' ' '); do
    T=$(echo "$t" | tr a-z A-Z)
    c=$(echo "${results["cand,$T"]:-0}" | median)
    r=$(echo "${results["ref,$T"]:-0}" | median)
    ratio=$(awk -v c="$c" -v r="$r" 'BEGIN { if (r > 0) printf "%.3f", c / r; else print "NA" }')
    echo "| $T | $c | $r | $ratio |"
done
# Both replicas must have followed: same offsets as their masters.
[ -n "${NO_REPLICA:-}" ] && exit 0
for pair in "$CM $CR" "$RM $RR"; do
    set -- $pair
    sleep 1
    mo=$(redis-cli -p "$1" info replication | tr -d '\r' | awk -F: '/^master_repl_offset/ {print $2}')
    ro=$(redis-cli -p "$2" info replication | tr -d '\r' | awk -F: '/^slave_repl_offset/ {print $2}')
    echo "# master $1 offset $mo, replica $2 offset $ro"
done
