#!/usr/bin/env bash
# SET and GET as a non-default ACL user with key patterns (the permission check runs
# before every command), Carmine against Redis side by side: the same user on both
# (`~key:* ~counter:* %R~ro:* +@all -@dangerous`), each server pinned to CPU 0,
# redis-benchmark to CPU 1, -c 50 -r 100000 (GET after a SET load fills those keys),
# -P 1 and -P 16, ROUNDS rounds alternating
# the servers. Prints requests/s, per-round ratios and the median ratio.
# DEFAULT_USER=1 runs the same load as the default user (no permission check), to
# tell the check's cost from the request path's.
#   benches/scripts/acl_throughput.sh target/release/carmine-server [redis-server]
set -euo pipefail
CARMINE=${1:?carmine-server binary}
REDIS=${2:-$(command -v redis-server)}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-1000000}
PORT=$((20000 + RANDOM % 10000))
DIR=$(mktemp -d)
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

run_one() { # binary test pipeline -> requests/s
    local bin=$1 test=$2 pipeline=$3
    taskset -c 0 "$bin" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$DIR" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p "$PORT" acl setuser bench on '>benchpw' '~key:*' '~counter:*' '%R~ro:*' \
        +@all -@dangerous >/dev/null
    # GETs read keys that exist (an empty keyspace measures only misses).
    [ "$test" = get ] && taskset -c 1 redis-benchmark -p "$PORT" -c 50 -r 100000 -n 400000 \
        -P 16 -t set -q >/dev/null 2>&1
    local auth=(--user bench -a benchpw)
    [ "${DEFAULT_USER:-0}" = 1 ] && auth=()
    local rps
    rps=$(taskset -c 1 redis-benchmark -p "$PORT" "${auth[@]}" -c 50 -r 100000 \
        -n "$REQUESTS" -P "$pipeline" -t "$test" -q 2>/dev/null | tr '\r' '\n' \
        | grep -oE '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1)
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$rps"
}

for t in set get; do
    for p in 1 16; do
        ratios=()
        for r in $(seq "$ROUNDS"); do
            c=$(run_one "$CARMINE" "$t" "$p")
            s=$(run_one "$REDIS" "$t" "$p")
            ratio=$(python3 -c "print(f'{$c/$s:.3f}')")
            ratios+=("$ratio")
            printf '%s -P %-2s round %s: carmine %10s redis %10s ratio %s\n' \
                "${t^^}" "$p" "$r" "$c" "$s" "$ratio"
        done
        printf '%s -P %-2s median ratio %s\n' "${t^^}" "$p" \
            "$(python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "${ratios[@]}")"
    done
done
