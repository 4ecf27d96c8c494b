"""Load: ``wrk`` over loopback for a bounded time, with the server's CPU time and peak memory
sampled around and during the run (psutil)."""

from __future__ import annotations

import itertools
import json
import os
import resource
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
# A body naming its operation this is sent under a new name every time (first-seen.lua).
FIRST_SEEN = "FirstSeen_0"


def _script(body: Path) -> Path:
    """post.lua, with first-seen.lua appended for a body of a first-seen query."""
    if FIRST_SEEN not in body.read_text():
        return LUA
    script = body.with_suffix(".lua")
    script.write_text(LUA.read_text() + "\n" + (HERE / "first-seen.lua").read_text())
    return script


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
class Sample:
    """One wrk run of one server, with what the machine did meanwhile."""

    wrk: dict[str, Any]
    wall: float
    server_cpu: float | None
    db_cpu: float | None
    machine_busy_cpu: float  # all processes, in CPU seconds
    own_cpu: float  # this harness and its wrk
    peaks: dict[int, int]

    @property
    def requests(self) -> int:
        return int(self.wrk["requests"])


@dataclass
class Run:
    server: str
    query: str
    concurrency: int
    rounds: int
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
    machine_busy_cpus: float  # CPUs busy on the machine during the run, all processes
    other_cpus: float | None  # of which neither the server, PostgreSQL nor the load generator
    socket_errors: int
    timeouts: int
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
        str(_script(body)),
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


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has ended
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def sample(
    *,
    url: str,
    pid: int,
    db_pid: int | None,
    body: Path,
    token: str,
    concurrency: int,
    seconds: float,
) -> Sample:
    """One measured wrk run with the server's CPU time, PostgreSQL's and the machine's, and
    the server's memory sampled during it."""
    memory = PeakMemory(pid)
    memory.start()
    cpu0, db0, busy0, own0 = cpu_seconds(pid), cpu_seconds(db_pid), _machine_busy(), _own_cpu()
    started = time.perf_counter()
    result = wrk(url, body, token, concurrency=concurrency, seconds=seconds)
    wall = time.perf_counter() - started
    cpu1, db1, busy1, own1 = cpu_seconds(pid), cpu_seconds(db_pid), _machine_busy(), _own_cpu()
    peaks = memory.stop()

    def delta(before: float | None, after: float | None) -> float | None:
        return None if before is None or after is None else after - before

    return Sample(
        wrk=result,
        wall=wall,
        server_cpu=delta(cpu0, cpu1),
        db_cpu=delta(db0, db1),
        machine_busy_cpu=busy1 - busy0,
        own_cpu=own1 - own0,
        peaks=peaks,
    )


def merged_percentile(samples: list[Sample], q: float) -> float:
    """The ``q`` percentile (microseconds) of the union of several runs' latencies, from each
    run's percentile points: the runs' distributions mixed in proportion to their requests."""
    curves = []
    for s in samples:
        if s.requests == 0:
            continue
        points = [(0.0, float(s.wrk["min_us"]))]
        points += [(float(p), float(x)) for p, x in s.wrk["percentiles_us"]]
        points.append((100.0, float(s.wrk["max_us"])))
        curves.append((s.requests, points))
    if not curves:
        return 0.0
    total = sum(w for w, _ in curves)

    def cdf(x: float) -> float:
        mixed = 0.0
        for weight, points in curves:
            share = 1.0
            if x < points[0][1]:
                share = 0.0
            else:
                for (p0, x0), (p1, x1) in itertools.pairwise(points):
                    if x < x1:
                        share = (p0 + (p1 - p0) * ((x - x0) / (x1 - x0) if x1 > x0 else 1)) / 100
                        break
            mixed += weight * share
        return mixed / total

    low = min(points[0][1] for _, points in curves)
    high = max(points[-1][1] for _, points in curves)
    for _ in range(60):
        middle = (low + high) / 2
        if cdf(middle) >= q / 100:
            high = middle
        else:
            low = middle
    return high


def aggregate(server: str, query: str, concurrency: int, samples: list[Sample]) -> Run:
    """One row from a server's rounds: sums of requests, time and CPU; merged latencies."""
    requests = sum(s.requests for s in samples)
    duration = sum(s.wrk["duration_us"] for s in samples) / 1e6
    wall = sum(s.wall for s in samples)

    def per_request(values: list[float | None]) -> float | None:
        if requests == 0 or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) * 1000 / requests

    server_cpu = [s.server_cpu for s in samples]
    db_cpu = [s.db_cpu for s in samples]
    others = None
    if all(v is not None for v in server_cpu + db_cpu):
        used = sum(s.server_cpu or 0.0 for s in samples) + sum(s.db_cpu or 0.0 for s in samples)
        own = sum(s.own_cpu for s in samples)
        others = max(0.0, sum(s.machine_busy_cpu for s in samples) - used - own) / wall
    peaks: dict[int, int] = {}
    for s in samples:
        for pid, rss in s.peaks.items():
            peaks[pid] = max(rss, peaks.get(pid, 0))
    sample_of_bad = next((s.wrk["bad_sample"] for s in samples if s.wrk["bad_sample"]), "")
    return Run(
        server=server,
        query=query,
        concurrency=concurrency,
        rounds=len(samples),
        seconds=duration,
        requests=requests,
        rps=requests / duration if duration else 0.0,
        p50_ms=merged_percentile(samples, 50) / 1000,
        p90_ms=merged_percentile(samples, 90) / 1000,
        p99_ms=merged_percentile(samples, 99) / 1000,
        max_ms=max(s.wrk["max_us"] for s in samples) / 1000,
        cpu_ms_per_req=per_request(server_cpu),
        db_cpu_ms_per_req=per_request(db_cpu),
        rss_mb=max(peaks.values(), default=0) / 2**20,
        rss_total_mb=sum(peaks.values()) / 2**20,
        kib_per_answer=sum(s.wrk["bytes"] for s in samples) / max(requests, 1) / 1024,
        machine_busy_cpus=sum(s.machine_busy_cpu for s in samples) / wall,
        other_cpus=others,
        socket_errors=sum(int(s.wrk["socket_errors"]) for s in samples),
        timeouts=sum(int(s.wrk["timeouts"]) for s in samples),
        bad_answers=sum(int(s.wrk["bad_answers"]) for s in samples),
        bad_sample=str(sample_of_bad),
    )
