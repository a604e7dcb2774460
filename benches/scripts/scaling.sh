#!/usr/bin/env bash
# Throughput as event loops are added: Carmine with io-threads 1, 2, 4, ... against Redis
# with io-threads 1 and 4, redis-benchmark on the cores the server does not use.
#
#     benches/scripts/scaling.sh target/release/carmine-server [redis-server]
#
# For each server and loop count N: the server pinned to the first N CPUs (CPU_ORDER),
# redis-benchmark pinned to the rest with --threads (CPUs - N), -c CLIENTS, -r 100000, -d 3. Each test
# (TESTS, default set,get; GET runs after SET so its keys exist) runs at each pipeline
# depth (PIPELINES, default 1,16) for WARM seconds, then the server's
# total_commands_processed is read over WINDOW seconds: requests/s come from the server's
# own counter, so no run needs a fixed request count. The CPU both sides used over the
# window (/proc/PID/stat) shows which one is the bottleneck: "srv%" and "cli%" are per
# core given to each (100 = every core busy).
#
# LOOPS (default 1,2,4,8,12) and REDIS_LOOPS (default 1,4; empty: none) choose the configurations;
# Redis runs with io-threads-do-reads yes; CARMINE_ARGS adds options to Carmine's command
# line (`--busy-poll-us 0`: a loop that polls counts as busy in "srv%"). RUN is a prefix for every program started (a
# dynamic loader carried to another machine, say); REDIS_BENCHMARK and REDIS_CLI name
# those tools. LOADGEN names `target/release/loadgen` (benches/src/bin/loadgen.rs) to load
# the server with it instead of redis-benchmark, whose threads share per-request counters
# and top out first on many cores. Output: one line per measurement, and a table at the end. Everything binds
# 127.0.0.1; every process is stopped on exit.
set -euo pipefail
CAND=${1:?usage: $0 CANDIDATE_BIN [REFERENCE_BIN]}
REF=${2:-redis-server}
LOOPS=${LOOPS:-1,2,4,8,12}
REDIS_LOOPS=${REDIS_LOOPS-1,4}
TESTS=${TESTS:-set,get}
PIPELINES=${PIPELINES:-1,16}
CLIENTS=${CLIENTS:-256}
WARM=${WARM:-1}
WINDOW=${WINDOW:-3}
RUN=${RUN:-}
BENCH=${REDIS_BENCHMARK:-redis-benchmark}
CLI=${REDIS_CLI:-redis-cli}
LOADGEN=${LOADGEN:-}
CPUS=$(nproc)
case "${CPU_ORDER:=linear}" in
linear | cores) ;;
*)
    echo "CPU_ORDER is linear or cores, not $CPU_ORDER" >&2
    exit 1
    ;;
esac
DIR=$(mktemp -d)
PORT=${PORT:-17800}
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

cli() { $RUN "$CLI" -h 127.0.0.1 -p "$PORT" "$@"; }

# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# CPU numbers expanded from a sysfs list such as "0-3,8".
expand_cpus() {
    local part
    for part in ${1//,/ }; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}

# Every CPU in the order the server takes them (see CPU_ORDER).
cpu_order() {
    local cpu siblings rank
    case "$CPU_ORDER" in
    linear) seq 0 $((CPUS - 1)) ;;
    cores)
        for cpu in $(seq 0 $((CPUS - 1))); do
            siblings=$(cat "/sys/devices/system/cpu/cpu$cpu/topology/thread_siblings_list" \
                2>/dev/null || echo "$cpu")
            # The CPU's place among its core's threads: 0 for the first of each core.
            rank=$(expand_cpus "$siblings" | grep -n -x "$cpu" | cut -d: -f1)
            echo "${rank:-1} $cpu"
        done | sort -n -k1,1 -k2,2 | awk '{print $2}'
        ;;
    esac
}
read -r -a ORDER <<<"$(cpu_order | tr '\n' ' ')"

# The comma list of ORDER's entries FROM up to (not including) TO.
cpu_list() { # from to
    local IFS=,
    echo "${ORDER[*]:$1:$(($2 - $1))}"
}

topology() {
    local cpu out=()
    for cpu in $(seq 0 $((CPUS - 1))); do
        out+=("$cpu:$(cat "/sys/devices/system/cpu/cpu$cpu/topology/thread_siblings_list" \
            2>/dev/null || echo '?')")
    done
    echo "thread siblings (cpu:its core's threads): ${out[*]}"
    echo "order (CPU_ORDER=$CPU_ORDER): ${ORDER[*]}"
}

commands_processed() {
    cli info stats | tr -d '\r' | awk -F: '$1 == "total_commands_processed" {print $2}'
}

start_server() { # name bin loops
    local name=$1 bin=$2 loops=$3 extra=()
    if [ "$name" = redis ]; then
        extra=(--io-threads-do-reads yes)
    else
        read -r -a extra <<<"${CARMINE_ARGS:-}"
    fi
    mkdir -p "$DIR/$name-$loops"
    taskset -c "$(cpu_list 0 "$loops")" $RUN "$bin" --port "$PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$DIR/$name-$loops" --io-threads "$loops" "${extra[@]}" \
        >"$DIR/$name-$loops/log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        cli ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$name with $loops loops did not start:" >&2
    cat "$DIR/$name-$loops/log" >&2
    exit 1
}

stop_server() {
    cli shutdown nosave >/dev/null 2>&1 || kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

measure() { # name loops test pipeline
    local name=$1 loops=$2 test=$3 pipeline=$4
    local client_cpus=$((CPUS - loops)) first=$loops
    if [ "$client_cpus" -lt 1 ]; then client_cpus=1; first=$((CPUS - 1)); fi
    if [ -n "$LOADGEN" ]; then
        taskset -c "$(cpu_list "$first" "$CPUS")" "$LOADGEN" --host 127.0.0.1 --port "$PORT" \
            --test "$test" --pipeline "$pipeline" --clients "$CLIENTS" \
            --threads "$client_cpus" --keyspace 100000 --data 3 --seconds 100000 >/dev/null 2>&1 &
    else
        taskset -c "$(cpu_list "$first" "$CPUS")" $RUN "$BENCH" -h 127.0.0.1 -p "$PORT" -t "$test" \
            -P "$pipeline" -c "$CLIENTS" --threads "$client_cpus" -r 100000 -d 3 \
            -n 2000000000 -q >/dev/null 2>&1 &
    fi
    local bench_pid=$!
    sleep "$WARM"
    local c0 t0 s0 b0 c1 t1 s1 b1
    c0=$(commands_processed) s0=$(ticks "$SERVER_PID") b0=$(ticks "$bench_pid")
    t0=$(date +%s.%N)
    sleep "$WINDOW"
    c1=$(commands_processed) s1=$(ticks "$SERVER_PID") b1=$(ticks "$bench_pid")
    t1=$(date +%s.%N)
    kill "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
    local hz
    hz=$(getconf CLK_TCK)
    awk -v n="$name" -v l="$loops" -v t="$test" -v p="$pipeline" -v c0="$c0" -v c1="$c1" \
        -v t0="$t0" -v t1="$t1" -v s="$((s1 - s0))" -v b="$((b1 - b0))" -v hz="$hz" \
        -v sc="$loops" -v cc="$client_cpus" -v scpus="$(cpu_list 0 "$loops")" \
        -v ccpus="$(cpu_list "$first" "$CPUS")" 'BEGIN {
            secs = t1 - t0
            printf "%-7s loops=%d %s P=%d rps=%.0f srv%%=%.0f cli%%=%.0f srv_cpus=%s cli_cpus=%s\n",
                n, l, t, p, (c1 - c0) / secs, 100 * s / hz / secs / sc,
                100 * b / hz / secs / cc, scpus, ccpus
        }' | tee -a "$DIR/results"
}

run_config() { # name bin loops
    start_server "$1" "$2" "$3"
    for test in ${TESTS//,/ }; do
        for pipeline in ${PIPELINES//,/ }; do
            measure "$1" "$3" "$test" "$pipeline"
        done
    done
    stop_server
}

echo "cpus=$CPUS clients=$CLIENTS warm=${WARM}s window=${WINDOW}s"
topology
for loops in ${REDIS_LOOPS//,/ }; do run_config redis "$REF" "$loops"; done
for loops in ${LOOPS//,/ }; do run_config carmine "$CAND" "$loops"; done

# Requests/s per configuration, and Carmine's against its own single loop.
echo
awk '{
    split($2, l, "="); split($4, p, "="); split($5, r, "=")
    key = $1 " " l[2]; row[key] = 1; col[$3 " -P " p[2]] = 1
    v[key, $3 " -P " p[2]] = r[2]
    if ($1 == "carmine" && l[2] == 1) base[$3 " -P " p[2]] = r[2]
} END {
    printf "%-14s", "server loops"
    for (c in col) printf " | %-22s", c
    printf "\n"
    for (k in row) {
        printf "%-14s", k
        split(k, kk, " ")
        for (c in col) {
            x = v[k, c]
            if (base[c] > 0) printf " | %9.0f (%5.2fx c1)", x, x / base[c]
            else printf " | %22.0f", x
        }
        printf "\n"
    }
}' "$DIR/results" | sort
