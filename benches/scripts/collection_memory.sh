#!/usr/bin/env bash
# Memory of collections, Carmine against Redis in one run (../shared/bench/memory.sh
# covers strings and small hashes).
#
#     benches/scripts/collection_memory.sh target/release/carmine-server [redis-server]
#
# For each kind, a fresh server of each implementation (pinned to CPU 0) is loaded
# through `redis-cli --pipe` and measured: used_memory and VmRSS after the load minus
# before, per key (per element for the long list).
#   longlist  one list of N 3-byte elements (RPUSH, 100 a command)
#   list      N/5 lists of 5 16-byte elements
#   set       N/5 sets of 5 16-byte members
#   intset    N/5 sets of 5 integers
#   zset      N/5 sorted sets of 5 16-byte members with small whole scores
# N defaults to 1500000; KINDS picks some. Everything binds 127.0.0.1.
set -euo pipefail
CAND=${1:?usage: $0 CANDIDATE_BIN [REFERENCE_BIN]}
REF=${2:-$(command -v redis-server)}
N=${N:-1500000}
KINDS=${KINDS:-longlist list set intset zset}
PORT=$((20000 + RANDOM % 10000))
DIR=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

generate() { # kind -> RESP on stdout
    python3 - "$1" "$N" <<'EOF'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*args):
    b = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        b.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(b)
if kind == "longlist":
    for i in range(0, n, 100):
        out.write(cmd(b"RPUSH", b"biglist", *[b"x%02d" % (j % 100) for j in range(100)]))
else:
    for i in range(n // 5):
        k = b"k:%012d" % i
        m = [b"m%015d" % (i * 5 + j) for j in range(5)]
        if kind == "list":
            out.write(cmd(b"RPUSH", k, *m))
        elif kind == "set":
            out.write(cmd(b"SADD", k, *m))
        elif kind == "intset":
            out.write(cmd(b"SADD", k, *[i * 5 + j for j in range(5)]))
        elif kind == "zset":
            out.write(cmd(b"ZADD", k, *[x for j in range(5) for x in (j, m[j])]))
EOF
}

used_memory() {
    redis-cli -p "$PORT" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" {print $2}'
}
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$PID/status"; }

measure() { # bin kind
    taskset -c 0 "$1" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$DIR" >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    local u0 r0 u1 r1 units
    u0=$(used_memory) r0=$(rss)
    redis-cli -p "$PORT" --pipe <"$DIR/$2.resp" >/dev/null
    sleep 1
    u1=$(used_memory) r1=$(rss)
    if [ "$2" = longlist ]; then units=$(redis-cli -p "$PORT" llen biglist); else units=$(redis-cli -p "$PORT" dbsize); fi
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    python3 -c "print(f'{($u1 - $u0) / $units:.1f} {($r1 - $r0) / $units:.1f}')"
}

printf '%-9s %-20s %-20s %s\n' kind "carmine used/rss" "redis used/rss" "rss ratio"
for kind in $KINDS; do
    generate "$kind" >"$DIR/$kind.resp"
    read -r cu cr <<<"$(measure "$CAND" "$kind")"
    read -r ru rr <<<"$(measure "$REF" "$kind")"
    printf '%-9s %-20s %-20s %s\n' "$kind" "$cu / $cr" "$ru / $rr" \
        "$(python3 -c "print(f'{$cr / $rr:.3f}')")"
done
