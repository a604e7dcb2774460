#!/usr/bin/env python3
"""How long a write waits when it lands on a huge value right after BGSAVE.

    python3 benches/scripts/huge_values.py target/release/carmine-server

Starts the server on 127.0.0.1 (a free port, a temporary dir), loads one huge value of
each kind (1M-element list, hash, sorted set and set; a 100 MB string next to a small
key in the same slot), then for each case starts BGSAVE and times one write to it
while the snapshot still holds the value. Prints milliseconds per case. Needs redis-py
(`pip install redis`). Works with redis-server too, where the write waits on the fork.
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = sys.argv[1]
    port, workdir = free_port(), tempfile.mkdtemp(prefix="huge-values-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        r = redis.Redis(port=port, protocol=2)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        n = 1_000_000
        p = r.pipeline(transaction=False)
        for i in range(0, n, 1000):
            p.rpush("{l}list", *[b"element-%08d" % j for j in range(i, i + 1000)])
            p.hset("{h}hash", mapping={b"field-%08d" % j: b"value-%08d" % j for j in range(i, i + 1000)})
            p.zadd("{z}zset", {b"member-%08d" % j: j for j in range(i, i + 1000)})
            p.sadd("{s}set", *[b"member-%08d" % j for j in range(i, i + 1000)])
            if i % 100_000 == 0:
                p.execute()
        p.execute()
        rnd = random.Random(1)
        blob = bytes(rnd.getrandbits(8) for _ in range(1 << 20)) * 100

        def during_bgsave(*cmd):
            r.execute_command("BGSAVE")
            t = time.monotonic()
            r.execute_command(*cmd)
            waited = time.monotonic() - t
            deadline = time.monotonic() + 120
            while r.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
                time.sleep(0.01)
            return waited * 1000

        cases = [
            ("RPUSH to a 1M-element list", ["RPUSH", "{l}list", "x"]),
            ("HSET on a 1M-field hash", ["HSET", "{h}hash", "x", "y"]),
            ("ZADD to a 1M-member sorted set", ["ZADD", "{z}zset", "1", "x"]),
            ("SADD to a 1M-member set", ["SADD", "{s}set", "x"]),
        ]
        for name, cmd in cases:
            print("%-44s %7.1f ms" % (name, during_bgsave(*cmd)))
        string_cases = [
            ("SET of a key next to a 100 MB string", ["SET", "{b}small", "y"]),
            ("APPEND to a 100 MB string", ["APPEND", "{b}big", "x"]),
            ("SETRANGE in a 100 MB string", ["SETRANGE", "{b}big", "5000000", "x"]),
            ("SETBIT in a 100 MB string", ["SETBIT", "{b}big", "400000000", "1"]),
            ("SET over a 100 MB string", ["SET", "{b}big", "small"]),
        ]
        for name, cmd in string_cases:
            r.set("{b}big", blob)
            r.set("{b}small", "x")
            print("%-44s %7.1f ms" % (name, during_bgsave(*cmd)))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
