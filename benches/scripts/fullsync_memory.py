#!/usr/bin/env python3
"""The master's peak memory during a full sync under a write load, Carmine against
Redis (which forks for it), side by side in one run.

    python3 benches/scripts/fullsync_memory.py target/release/carmine-server [redis-server]

For each round and each implementation (alternating): a master with KEYS keys
(key:%012d) of VALUE bytes, a write load overwriting them (redis-benchmark SET,
LOAD_CLIENTS clients, default 2; 0 for none), and after a warm-up a fresh replica of the same kind attaches
(`repl-diskless-sync yes`, delay 0). Every 100 ms the script sums Pss (from
/proc/PID/smaps_rollup) over the master and all its descendants — a forked child's
copy-on-write pages are split between parent and child, so the sum is the real
footprint — until the replica reports its link up. Reported per implementation
(medians): peak Pss during the sync / Pss just before, and the sync's seconds.
Everything binds 127.0.0.1; every process is stopped on exit.
"""

import os
import statistics
import subprocess
import sys
import time


from benchproc import populate_benchmark_keys, pss_kib, procs, start, stop, stop_all

KEYS = int(os.environ.get("KEYS", 1_000_000))
VALUE = int(os.environ.get("VALUE", 100))
ROUNDS = int(os.environ.get("ROUNDS", 3))
WARMUP = float(os.environ.get("WARMUP_SECS", 1.5))
LOAD_CLIENTS = int(os.environ.get("LOAD_CLIENTS", 2))  # 0: no write load

def one_round(binary):
    master, mport, m = start(binary, ["--repl-diskless-sync", "yes",
                                      "--repl-diskless-sync-delay", "0"])
    populate_benchmark_keys(mport, KEYS, VALUE)
    load = subprocess.Popen(
        ["redis-benchmark", "-p", str(mport), "-t", "set", "-r", str(KEYS), "-d", str(VALUE),
         "-c", str(LOAD_CLIENTS), "-n", "100000000" if LOAD_CLIENTS else "0", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(load)
    time.sleep(WARMUP)
    before = statistics.median(pss_kib(master.pid) for _ in range(3))
    replica, _, r = start(binary, [])
    started = time.monotonic()
    r.execute_command("REPLICAOF", "127.0.0.1", mport)
    peak = before
    while time.monotonic() - started < 300:
        peak = max(peak, pss_kib(master.pid))
        if r.info("replication").get("master_link_status") == "up":
            break
        time.sleep(0.1)
    secs = time.monotonic() - started
    for p in (load, replica, master):
        stop(p)
    return peak / before, secs


def main():
    cand = sys.argv[1]
    ref = sys.argv[2] if len(sys.argv) > 2 else "redis-server"
    results = {cand: [], ref: []}
    for i in range(ROUNDS):
        order = (cand, ref) if i % 2 == 0 else (ref, cand)
        for b in order:
            results[b].append(one_round(b))
            ratio, secs = results[b][-1]
            print(f"round {i + 1} {os.path.basename(b)}: peak/before {ratio:.3f}, {secs:.2f} s",
                  flush=True)
    for b, rs in results.items():
        print(f"{os.path.basename(b)}: peak Pss / Pss before, median {statistics.median(r[0] for r in rs):.3f}; "
              f"sync seconds, median {statistics.median(r[1] for r in rs):.2f}")


try:
    main()
finally:
    stop_all()
