#!/usr/bin/env bash
# Packs what benches/scripts/scaling.sh needs into one folder that runs on another x86-64
# Linux machine whatever its libraries: the release carmine-server and loadgen, Debian's
# redis-server, redis-benchmark and redis-cli, taskset and awk (used only where that
# machine lacks them), and with PERF=1 perf. Every program is started through a copy of
# this machine's dynamic loader and libraries, by a wrapper of the program's name.
#
#     cargo build --release && benches/scripts/device_bundle.sh [.dev]
#     (.gitignore keeps /.dev/ out of git)
#
# On the other machine, from the repository root (`.dev/run-scaling.sh` passes scaling.sh's
# environment knobs through; `.dev/run-device-checks.sh` runs every many-core figure of
# issue #18 in about five minutes, into $OUT/device-checks.txt):
#
#     LOADGEN=$PWD/.dev/loadgen .dev/run-scaling.sh
#     OUT=$OUT .dev/run-device-checks.sh
#     .dev/perf record -g -p PID -- sleep 3    # with PERF=1
#
# Without perf the folder is about 24 MB; perf adds about 33.
set -euo pipefail
OUT=${1:-.dev}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$OUT"
mkdir -p "$OUT/lib" "$OUT/fallback"

# A script that starts NAME.real through the carried loader; UP climbs from the wrapper's
# folder to the bundle's (the fallback wrappers sit one folder down).
wrap() { # name wrapper-folder up
    local name=$1 dir=$2 up=$3
    cat >"$dir/$name" <<EOF
#!/bin/sh
D=\$(dirname "\$(readlink -f "\$0")")$up
exec "\$D/lib/ld-linux-x86-64.so.2" --library-path "\$D/lib" "\$D/$name.real" "\$@"
EOF
    chmod +x "$dir/$name"
}

carry() { # program path, name in the bundle, wrapper folder
    local path=$1 name=$2 dir=$3 up=${4:-}
    cp -L "$path" "$OUT/$name.real"
    ldd "$path" | awk '/=>/ && $3 ~ /^\// {print $3} /ld-linux/ {print $1}' |
        while read -r lib; do cp -Ln "$lib" "$OUT/lib/" 2>/dev/null || true; done
    wrap "$name" "$dir" "$up"
}

strip -o "$OUT/carmine-server.tmp" "$ROOT/target/release/carmine-server"
carry "$OUT/carmine-server.tmp" carmine-server "$OUT"
strip -o "$OUT/loadgen.tmp" "$ROOT/target/release/loadgen"
carry "$OUT/loadgen.tmp" loadgen "$OUT"
rm -f "$OUT/carmine-server.tmp" "$OUT/loadgen.tmp"
for tool in redis-server redis-benchmark redis-cli; do
    carry "$(command -v "$tool")" "$tool" "$OUT"
done
carry "$(command -v taskset)" taskset "$OUT/fallback" "/.."
carry "$(readlink -f "$(command -v awk)")" awk "$OUT/fallback" "/.."
if [ "${PERF:-0}" = 1 ]; then
    carry "$(command -v perf)" perf "$OUT"
fi

cat >"$OUT/run-scaling.sh" <<'EOF'
#!/bin/bash
# scaling.sh with the carried programs; results also in $OUT/scaling.txt when OUT is set.
cd "$(dirname "$0")/.."
D=$PWD/$(basename "$(dirname "$0")")
export PATH=$PATH:$D/fallback
{ uname -a; nproc; grep -m1 'model name' /proc/cpuinfo
  cat /sys/devices/system/clocksource/clocksource0/current_clocksource; } 2>&1
export REDIS_BENCHMARK=$D/redis-benchmark REDIS_CLI=$D/redis-cli
benches/scripts/scaling.sh "$D/carmine-server" "$D/redis-server" 2>&1 | tee "${OUT:-/tmp}/scaling.txt"
EOF
chmod +x "$OUT/run-scaling.sh"

# Every figure issue #18 asks of a many-core machine, in one call of about five minutes
# (a lent device's time is short): one loop against Redis with redis-benchmark on the
# other cores, loop scaling with loadgen (the loops on distinct physical cores first),
# and both servers with a replica, each on its own core, the client on the rest.
cat >"$OUT/run-device-checks.sh" <<'EOF'
#!/bin/bash
cd "$(dirname "$0")/.."
D=$PWD/$(basename "$(dirname "$0")")
export PATH=$D:$PATH:$D/fallback
export REDIS_BENCHMARK=$D/redis-benchmark REDIS_CLI=$D/redis-cli
R=${OUT:-/tmp}
CPUS=$(nproc)
{
    uname -a; nproc; grep -m1 'model name' /proc/cpuinfo
    cat /sys/devices/system/clocksource/clocksource0/current_clocksource
    echo "== one loop against Redis, redis-benchmark (--threads $((CPUS - 1))) on the other cores"
    LOOPS=1 REDIS_LOOPS=1 CLIENTS=50 WINDOW=2 TESTS=set,get,incr,lpush,hset,sadd,zadd,mset \
        benches/scripts/scaling.sh "$D/carmine-server" "$D/redis-server"
    echo "== scaling with loadgen, loops on distinct physical cores first"
    LOADGEN=$D/loadgen CPU_ORDER=cores WINDOW=2 \
        benches/scripts/scaling.sh "$D/carmine-server" "$D/redis-server"
    echo "== with a replica: master CPU 0, replica CPU 1, redis-benchmark (8 threads) on 2-$((CPUS - 1))"
    MASTER_CPU=0 REPLICA_CPU=1 CLIENT_CPUS=2-$((CPUS - 1)) BENCH_THREADS=8 ROUNDS=2 N=3000000 \
        benches/scripts/replica_throughput.sh "$D/carmine-server" "$D/redis-server"
} 2>&1 | tee "$R/device-checks.txt"
EOF
chmod +x "$OUT/run-device-checks.sh"
du -sh "$OUT"
