#!/usr/bin/env bash
# EVALSHA of a small script (GET + INCR + EXPIRE on one key), Carmine against Redis side
# by side: each server pinned to CPU 0, redis-benchmark to CPU 1, -c 50 -r 100000,
# -P 1 and -P 16, ROUNDS rounds alternating the servers. Prints requests/s and ratios.
#   benches/scripts/evalsha.sh target/release/carmine-server [redis-server]
# LOADGEN=target/release/loadgen loads the server with it (benches/src/bin/loadgen.rs,
# SECONDS_EACH seconds a run, default 4) instead of redis-benchmark, whose own core is
# the bottleneck on a 2-core machine: under EVALSHA -P 1 it was 100% busy (93% of it in
# the kernel: five epoll_ctl calls, a send and a receive per request).
set -euo pipefail
CARMINE=${1:?carmine-server binary}
REDIS=${2:-$(command -v redis-server)}
ROUNDS=${ROUNDS:-2}
REQUESTS=${REQUESTS:-300000}
SCRIPT="local v = redis.call('get', KEYS[1]) redis.call('incr', KEYS[1]) redis.call('expire', KEYS[1], 100) return v"
PORT=$((20000 + RANDOM % 10000))
DIR=$(mktemp -d)
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

run_one() { # binary pipeline -> requests/s
    local bin=$1 pipeline=$2
    taskset -c 0 "$bin" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$DIR" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    local sha
    sha=$(redis-cli -p "$PORT" script load "$SCRIPT")
    local rps
    if [ -n "${LOADGEN:-}" ]; then
        rps=$(taskset -c 1 "$LOADGEN" --port "$PORT" --threads 1 --clients 50 \
            --pipeline "$pipeline" --seconds "${SECONDS_EACH:-4}" \
            --command "EVALSHA $sha 1 key:__rand_int__" | grep -oE '^[0-9]+ requests/s' \
            | cut -d' ' -f1)
    else
        rps=$(taskset -c 1 redis-benchmark -p "$PORT" -c 50 -r 100000 -n "$REQUESTS" \
            -P "$pipeline" -q evalsha "$sha" 1 'key:__rand_int__' 2>/dev/null \
            | tr '\r' '\n' | grep -oE '[0-9.]+ requests per second' | tail -1 \
            | cut -d' ' -f1)
    fi
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$rps"
}

for p in 1 16; do
    for r in $(seq "$ROUNDS"); do
        c=$(run_one "$CARMINE" "$p")
        s=$(run_one "$REDIS" "$p")
        printf 'EVALSHA -P %-2s round %s: carmine %10s redis %10s ratio %s\n' "$p" "$r" "$c" "$s" \
            "$(python3 -c "print(f'{$c/$s:.2f}')")"
    done
done
