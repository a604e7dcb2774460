#!/usr/bin/env python3
"""BGREWRITEAOF under a write load, Carmine against Redis (which forks for it), side by
side in one run: peak memory and the worst write latency a client sees meanwhile.

    python3 benches/scripts/aof_rewrite.py target/release/carmine-server [redis-server]

For each round and each implementation (alternating): a server with `appendonly yes`
(`appendfsync everysec`) and KEYS keys (key:%012d) of VALUE bytes, a write load
overwriting them (redis-benchmark SET, LOAD_CLIENTS clients, default 2), and a probe
client timing one SET after another. After a warm-up, BGREWRITEAOF; every 100 ms the
script sums Pss over the server and its descendants (a forked child's copy-on-write
pages are split between parent and child, so the sum is the real footprint) until
INFO shows the rewrite over. Reported per implementation (medians): peak Pss during the
rewrite / Pss just before, the worst probe latency during it, and its seconds.
Everything binds 127.0.0.1; every process is stopped on exit.
"""

import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import redis

from benchproc import populate_benchmark_keys, procs, pss_kib, start, stop, stop_all

KEYS = int(os.environ.get("KEYS", 3_000_000))
VALUE = int(os.environ.get("VALUE", 100))
ROUNDS = int(os.environ.get("ROUNDS", 3))
WARMUP = float(os.environ.get("WARMUP_SECS", 1.5))
LOAD_CLIENTS = int(os.environ.get("LOAD_CLIENTS", 2))  # 0: no write load


def probe(port, stop_flag, worst):
    """SETs one after another; worst[0] holds the slowest while worst[1] is True."""
    c = redis.Redis(port=port, socket_timeout=60)
    while not stop_flag.is_set():
        t = time.perf_counter()
        c.set("probe", "x")
        dt = time.perf_counter() - t
        if worst[1]:
            worst[0] = max(worst[0], dt)


def one_round(binary):
    server, port, c = start(binary, ["--appendonly", "yes", "--appendfsync", "everysec",
                                     "--auto-aof-rewrite-percentage", "0"])
    populate_benchmark_keys(port, KEYS, VALUE)
    load = subprocess.Popen(
        ["redis-benchmark", "-p", str(port), "-t", "set", "-r", str(KEYS), "-d", str(VALUE),
         "-c", str(LOAD_CLIENTS), "-n", "100000000" if LOAD_CLIENTS else "0", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(load)
    stop_flag = threading.Event()
    worst = [0.0, False]
    t = threading.Thread(target=probe, args=(port, stop_flag, worst), daemon=True)
    t.start()
    time.sleep(WARMUP)
    before = statistics.median(pss_kib(server.pid) for _ in range(3))
    worst[1] = True
    started = time.monotonic()
    c.execute_command("BGREWRITEAOF")
    peak = before
    while time.monotonic() - started < 600:
        peak = max(peak, pss_kib(server.pid))
        info = c.info("persistence")
        if info.get("aof_rewrite_in_progress") == 0 and info.get("aof_rewrite_scheduled") == 0:
            break
        time.sleep(0.1)
    secs = time.monotonic() - started
    worst[1] = False
    stop_flag.set()
    t.join(timeout=10)
    status = c.info("persistence").get("aof_last_bgrewrite_status")
    for p in (load, server):
        stop(p)
    return peak / before, worst[0] * 1000, secs, status


def main():
    cand = sys.argv[1]
    ref = sys.argv[2] if len(sys.argv) > 2 else "redis-server"
    results = {cand: [], ref: []}
    for i in range(ROUNDS):
        order = (cand, ref) if i % 2 == 0 else (ref, cand)
        for b in order:
            results[b].append(one_round(b))
            ratio, worst_ms, secs, status = results[b][-1]
            print(f"round {i + 1} {os.path.basename(b)}: peak/before {ratio:.3f}, worst SET "
                  f"{worst_ms:.2f} ms, {secs:.2f} s, status {status}", flush=True)
    for b, rs in results.items():
        print(f"{os.path.basename(b)}: peak Pss / Pss before, median {statistics.median(r[0] for r in rs):.3f}; "
              f"worst SET latency ms, median {statistics.median(r[1] for r in rs):.2f}; "
              f"rewrite seconds, median {statistics.median(r[2] for r in rs):.2f}")


try:
    main()
finally:
    stop_all()
