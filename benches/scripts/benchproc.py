"""Process helpers shared by the scripts here: servers on free ports of 127.0.0.1 in
temp directories, Pss summed over a process tree, and cleanup of what was started."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis

procs = []
workdirs = {}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, extra):
    port = free_port()
    d = tempfile.mkdtemp()
    p = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", d, "--enable-debug-command", "yes", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    workdirs[p.pid] = d
    c = redis.Redis(port=port, socket_timeout=60)
    for _ in range(200):
        try:
            c.ping()
            return p, port, c
        except redis.exceptions.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"{binary} did not start")


def tree(pid):
    out = [pid]
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                for child in f.read().split():
                    out.extend(tree(int(child)))
        except OSError:
            pass
    return out


def pss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def stop(p):
    p.kill()
    p.wait()
    # The scripts load gigabytes; leaving each run's files behind fills the disk.
    shutil.rmtree(workdirs.pop(p.pid, ""), ignore_errors=True)


def stop_all():
    """Kill whatever is still running and remove every server's directory."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for d in workdirs.values():
        shutil.rmtree(d, ignore_errors=True)
    workdirs.clear()


def populate_benchmark_keys(port, keys, value_size, batch=5000):
    """SET key:%012d for every key the write load picks, so that it overwrites them (DEBUG
    POPULATE's `key:N` names are not redis-benchmark's: its SETs then added new keys, and
    a peak measured the dataset's growth during the run, not what was measured)."""
    value = b"v" * value_size
    tmpl = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + str(value_size).encode() + b"\r\n" + value + b"\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        for first in range(0, keys, batch):
            n = min(batch, keys - first)
            s.sendall(b"".join(tmpl % i for i in range(first, first + n)))
            want, got = n * len(b"+OK\r\n"), 0
            while got < want:
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("server closed the connection while loading")
                got += len(chunk)
