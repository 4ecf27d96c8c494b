"""Load: ``wrk`` over loopback for a bounded time, with the server's CPU time and peak memory
sampled around and during the run (psutil)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
LUA = HERE / "post.lua"


class WrkMissing(RuntimeError):
    pass


def ensure_wrk() -> str:
    """The wrk binary; Debian's package is installed when missing and running as root (as
    ``scripts/redis.sh`` does for redis-server)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (Debian package) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)  # noqa: S607
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],  # noqa: S607
            check=True,
            env=env,
            timeout=600,
        )
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing("wrk is missing: install it (Debian: apt-get install wrk).")


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (uvicorn workers, node's helpers, PostgreSQL backends)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process tree so far, children that ended included."""
    if pid is None:
        return None
    total = 0.0
    for process in tree(pid):
        try:
            t = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class PeakMemory(threading.Thread):
    """The largest RSS each process of a tree reached, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        for process in tree(self.pid):
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.peaks[process.pid] = max(rss, self.peaks.get(process.pid, 0))

    def stop(self) -> dict[int, int]:
        self._done.set()
        self.join()
        self.sample()
        return self.peaks


@dataclass
class Run:
    server: str
    query: str
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_req: float | None
    db_cpu_ms_per_req: float | None
    rss_mb: float  # the largest peak RSS of one process of the server
    rss_total_mb: float  # the sum of the peaks of all its processes
    kib_per_answer: float
    socket_errors: int
    bad_answers: int
    bad_sample: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wrk(
    url: str,
    body: Path,
    token: str,
    *,
    concurrency: int,
    seconds: float,
    threads: int = 1,
) -> dict[str, Any]:
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(body),
        token,
    ]
    done = subprocess.run(  # noqa: S603 - our own command line
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def measure(
    *,
    server: str,
    query: str,
    url: str,
    pid: int,
    db_pid: int | None,
    body: Path,
    token: str,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> Run:
    """A warm-up run (not counted), then the measured run with CPU and memory sampled."""
    if warmup > 0:
        wrk(url, body, token, concurrency=concurrency, seconds=warmup)
    memory = PeakMemory(pid)
    memory.start()
    cpu0, db0 = cpu_seconds(pid), cpu_seconds(db_pid)
    started = time.perf_counter()
    result = wrk(url, body, token, concurrency=concurrency, seconds=seconds)
    wall = time.perf_counter() - started
    cpu1, db1 = cpu_seconds(pid), cpu_seconds(db_pid)
    peaks = memory.stop()
    requests = int(result["requests"])
    duration = result["duration_us"] / 1e6 or wall

    def per_request(before: float | None, after: float | None) -> float | None:
        if before is None or after is None or requests == 0:
            return None
        return (after - before) * 1000 / requests

    return Run(
        server=server,
        query=query,
        concurrency=concurrency,
        seconds=duration,
        requests=requests,
        rps=requests / duration,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        cpu_ms_per_req=per_request(cpu0, cpu1),
        db_cpu_ms_per_req=per_request(db0, db1),
        rss_mb=max(peaks.values(), default=0) / 2**20,
        rss_total_mb=sum(peaks.values()) / 2**20,
        kib_per_answer=result["bytes"] / max(requests, 1) / 1024,
        socket_errors=int(result["socket_errors"]),
        bad_answers=int(result["bad_answers"]),
        bad_sample=str(result["bad_sample"]),
    )
