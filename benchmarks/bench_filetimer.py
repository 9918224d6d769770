#!/usr/bin/env python3
"""Measure filetimer against the SPEC's performance targets, side by side with torch.

    python benchmarks/bench_filetimer.py            # every row, under 2 minutes
    python benchmarks/bench_filetimer.py --quick    # fewer runs, under 20 seconds
    python benchmarks/bench_filetimer.py --json     # one JSON object per figure

Where torch imports (``pip install torch==2.13.0`` into a throwaway venv and run
this script with that venv's python), each row is also measured against torch's
FileTimerServer/FileTimerClient. Every figure is the median of several runs.
Servers run in their own processes; Linux only (it reads /proc).
"""

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import filetimer  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="ignore")
FAR = 10**9  # seconds: a deadline that never comes during a benchmark

# A server in a child process, answering "count" and "stop" on stdin.
SERVER = r"""
import json, sys, threading, time
impl, path, max_interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerServer
    server = FileTimerServer(path, "bench", max_interval=max_interval)
    count, timers = (lambda: server._request_count), (lambda: len(server._timers))
else:
    import filetimer
    server = filetimer.FileTimerServer(path, max_interval=max_interval)
    count, timers = (lambda: server.request_count), (lambda: len(server.timers()))
server.start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "stop":
        started = time.perf_counter()
        server.stop()
        print(json.dumps({"stop": time.perf_counter() - started, "threads": threading.active_count()}), flush=True)
        break
    print(json.dumps({"count": count(), "timers": timers()}), flush=True)
"""

# A writer process: argv impl path pairs start_at; acquire/release pairs on 10 scopes.
WRITER = r"""
import json, sys, time
impl, path, pairs, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerClient
else:
    from filetimer import FileTimerClient
client = FileTimerClient(path)
sent = errors = 0
kinds = set()
while time.time() < start_at:
    pass
for i in range(pairs):
    for call, args in ((client.acquire, ("s%d" % (i % 10), time.time() + 600)), (client.release, ("s%d" % (i % 10),))):
        try:
            call(*args)
            sent += 1
        except Exception as e:
            errors += 1
            kinds.add(type(e).__name__)
print(json.dumps({"sent": sent, "errors": errors, "kinds": sorted(kinds)}), flush=True)
"""


class ServerProcess:
    """A filetimer or torch server in a child process."""

    def __init__(self, impl, path, max_interval=10.0):
        self.impl, self.path = impl, path
        self.child = subprocess.Popen(
            [sys.executable, "-c", SERVER, impl, path, str(max_interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, text=True,
        )
        if self.child.stdout.readline().strip() != "ready":
            raise RuntimeError("%s server did not start" % impl)
        self.pid = self.child.pid

    def ask(self, command="count"):
        self.child.stdin.write(command + "\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def count(self):
        return self.ask()["count"]

    def wait_for_count(self, target, patience=3.0):
        """Poll until the server has counted ``target`` requests or stopped making progress.

        Returns the count and the wall-clock time it was last seen to change.
        """
        last, last_change = -1, time.time()
        while True:
            count = self.count()
            now = time.time()
            if count >= target:
                return count, now
            if count != last:
                last, last_change = count, now
            elif now - last_change > patience:
                return count, last_change
            time.sleep(0.01)  # asking more often makes the server's threads fight for the GIL

    def close(self):
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait()
        self.child.stdin.close()
        self.child.stdout.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def end(child):
    if child.poll() is None:
        child.kill()
    child.wait()


def cpu_seconds(pid):
    """CPU time of all the process's threads, from schedstat (nanoseconds, unlike /proc/<pid>/stat's ticks)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def wakeups(pid):
    """Voluntary context switches (sleeps that ended) of the process's threads other than its main thread."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        if int(tid) != pid:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
    return total


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def client_module(impl):
    if impl == "torch":
        from torch.distributed.elastic import timer
        return timer
    return filetimer


def request_line(impl, pid, scope, expiration, sig=9):
    return (client_module(impl).FileTimerRequest(pid, scope, expiration, sig).to_json() + "\n").encode()


def send(impl, path, pid, scope, expiration, sig=9):
    """One request for another process's pid, with the implementation's own client."""
    module = client_module(impl)
    module.FileTimerClient(path)._send_request(module.FileTimerRequest(pid, scope, expiration, sig))


def write_lines(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:65536]):]
    finally:
        os.close(fd)


# --- the rows ----------------------------------------------------------------------


def bench_pair(impl, path, runs, pairs):
    """Median µs for one acquire+release through the client, server in another process."""
    with ServerProcess(impl, path) as server:
        client = client_module(impl).FileTimerClient(path)
        medians, errors = [], 0
        for _ in range(runs):
            samples = []
            for _ in range(pairs):
                started = time.perf_counter_ns()
                try:
                    client.acquire("pair", time.time() + 600)
                    client.release("pair")
                except Exception:
                    errors += 1
                samples.append(time.perf_counter_ns() - started)
            medians.append(statistics.median(samples) / 1000)
        server.count()
    return {"pair_us": statistics.median(medians), "pair_errors": errors, "pair_attempts": runs * pairs}


def bench_ingest(impl, path, runs, pairs_per_writer, writers=4):
    """Requests/s from 4 writer processes, with requests lost and client errors.

    torch's server counts requests once per max_interval, so it runs at 1 s here.
    """
    rates, lost, errors, kinds, crashed = [], 0, 0, set(), 0
    max_interval = 1.0 if impl == "torch" else 10.0
    with ServerProcess(impl, path, max_interval) as server:
        for _ in range(runs):
            base = server.count()
            start_at = time.time() + 0.5
            children = [subprocess.Popen([sys.executable, "-c", WRITER, impl, path, str(pairs_per_writer),
                                          str(start_at)], stdout=subprocess.PIPE, env=ENV, text=True)
                        for _ in range(writers)]
            sent = 0
            server.wait_for_count(base + writers * pairs_per_writer * 2, patience=max_interval + 1.5)
            for child in children:
                out, _ = child.communicate(timeout=120)
                if child.returncode != 0 or not out.strip():
                    crashed += 1
                    continue
                report = json.loads(out)
                sent += report["sent"]
                errors += report["errors"]
                kinds.update(report["kinds"])
            count, done = server.wait_for_count(base + sent, patience=max_interval + 0.5)
            lost += sent - (count - base)
            rates.append((count - base) / (done - start_at))
    return {"ingest_rps": statistics.median(rates), "ingest_lost": lost, "ingest_errors": errors,
            "ingest_error_kinds": sorted(kinds), "ingest_crashed_writers": crashed}


def bench_expiry(impl, path, runs, max_interval):
    """ms from the deadline to the worker's death seen by its parent's waitpid."""
    latencies = []
    server = None
    try:
        for _ in range(runs):
            if server is None:  # torch's server SIGKILLs itself after a reap: a new one each run
                server = ServerProcess(impl, path, max_interval)
            worker = sleeper()
            time.sleep(0.05)
            deadline = time.time() + 0.1
            send(impl, path, worker.pid, "expiry", deadline)
            os.waitpid(worker.pid, 0)
            latencies.append((time.time() - deadline) * 1000)
            worker.returncode = -signal.SIGKILL
            if impl == "torch":
                server.child.wait(30)
                server.close()
                server = None
    finally:
        if server is not None:
            server.close()
    return {"median_ms": statistics.median(latencies), "max_ms": max(latencies)}


def bench_idle(impl, path, intervals, max_interval=1.0):
    """Wake-ups per max_interval and CPU of a server holding one far-away timer.

    The window opens just after a wake-up and lasts intervals + 1/2 of
    max_interval, so a server that wakes once per interval shows exactly 1.
    """
    worker = sleeper()
    try:
        with ServerProcess(impl, path, max_interval) as server:
            send(impl, path, worker.pid, "idle", time.time() + 3600)
            server.wait_for_count(1)
            time.sleep(max_interval + 0.2)
            before = wakeups(server.pid)
            while wakeups(server.pid) == before:
                time.sleep(0.001)
            woken, cpu = wakeups(server.pid), cpu_seconds(server.pid)
            seconds = (intervals + 0.5) * max_interval
            time.sleep(seconds)
            return {"idle_wakeups_per_interval": (wakeups(server.pid) - woken) / intervals,
                    "idle_cpu_ms_per_s": (cpu_seconds(server.pid) - cpu) / seconds * 1000}
    finally:
        end(worker)


def bench_many(impl, path, timers, seconds):
    """Register ``timers`` active timers; time it, then CPU per second and RSS at max_interval 0.1."""
    worker = sleeper()
    try:
        with ServerProcess(impl, path, 0.1) as server:
            data = b"".join(request_line(impl, worker.pid, "t%d" % i, time.time() + 3600) for i in range(timers))
            base = server.count()
            started = time.time()
            write_lines(path, data)
            count, done = server.wait_for_count(base + timers)
            registered = done - started
            cpu = cpu_seconds(server.pid)
            time.sleep(seconds)
            cpu_ms_per_s = (cpu_seconds(server.pid) - cpu) / seconds * 1000
            return {"many_register_s": registered, "many_cpu_ms_per_s": cpu_ms_per_s,
                    "many_rss_mb": rss_mb(server.pid), "many_registered": count - base}
    finally:
        end(worker)


def bench_churn(impl, path, requests):
    """Server RSS before and after ``requests`` acquire/release on 10 scopes."""
    worker = sleeper()
    try:
        with ServerProcess(impl, path) as server:
            pair = [request_line(impl, worker.pid, "c%d" % s, time.time() + 3600) + request_line(impl, worker.pid,
                    "c%d" % s, -1, 0) for s in range(10)]
            block = b"".join(pair) * 500  # 10,000 requests
            write_lines(path, block)
            server.wait_for_count(len(pair) * 1000)
            before = rss_mb(server.pid)
            for _ in range(requests // 10000):
                write_lines(path, block)
            server.wait_for_count(10000 + requests)
            return {"churn_rss_before_mb": before, "churn_rss_after_mb": rss_mb(server.pid)}
    finally:
        end(worker)


def bench_stop(impl, path, runs, max_interval):
    """ms for stop() with no client ever connected, and whether a thread was left behind."""
    times, leaked = [], 0
    for _ in range(runs):
        with ServerProcess(impl, path, max_interval) as server:
            time.sleep(0.05)
            report = server.ask("stop")
            times.append(report["stop"] * 1000)
            leaked += report["threads"] > 1
    return {"stop_ms": statistics.median(times), "stop_threads_left": leaked}


class _NullClient:
    """A client that does no I/O, so only the bookkeeping of expires() is timed."""

    def acquire(self, scope_id, expiration_time):
        pass

    def release(self, scope_id):
        pass


def bench_expires(impl, depth, runs, uses):
    """µs per ``with expires(...)`` with the default scope, client I/O excluded, at a stack depth."""
    expires = client_module(impl).expires
    client = _NullClient()

    def at_depth(n):
        if n > 1:
            return at_depth(n - 1)
        started = time.perf_counter()
        for _ in range(uses):
            with expires(after=60, client=client):
                pass
        return (time.perf_counter() - started) / uses * 1e6

    return statistics.median(at_depth(depth) for _ in range(runs))


# --- the table ------------------------------------------------------------------------

ROWS = [
    # (key, label, unit, target as text, check)
    ("pair_us", "acquire+release pair (server in another process)", "µs", "<= 10", lambda v: v <= 10),
    ("pair_errors", "  pair errors", "", "0", lambda v: v == 0),
    ("ingest_rps", "ingest, 4 writer processes", "req/s", ">= 150000", lambda v: v >= 150000),
    ("ingest_lost", "  requests lost (sent - counted)", "", "0", lambda v: v == 0),
    ("ingest_errors", "  client errors", "", "0", lambda v: v == 0),
    ("ingest_crashed_writers", "  writers crashed", "", "0", lambda v: v == 0),
    ("expiry_0.1_median_ms", "expiry latency, max_interval 0.1, median", "ms", "<= 2", lambda v: v <= 2),
    ("expiry_0.1_max_ms", "expiry latency, max_interval 0.1, max", "ms", "<= 10", lambda v: v <= 10),
    ("expiry_10_median_ms", "expiry latency, max_interval 10, median", "ms", "<= 2", lambda v: v <= 2),
    ("expiry_10_max_ms", "expiry latency, max_interval 10, max", "ms", "<= 10", lambda v: v <= 10),
    ("idle_wakeups_per_interval", "idle, one timer: wake-ups per max_interval", "", "<= 1", lambda v: v <= 1),
    ("idle_cpu_ms_per_s", "idle, one timer: CPU", "ms/s", "-", None),
    ("many_register_s", "100,000 active timers: time to register", "s", "<= 0.5", lambda v: v <= 0.5),
    ("many_cpu_ms_per_s", "100,000 active timers: CPU at max_interval 0.1", "ms/s", "<= 2", lambda v: v <= 2),
    ("many_rss_mb", "100,000 active timers: server RSS", "MB", "-", None),
    ("churn_rss_before_mb", "1,000,000 acquire/release, 10 scopes: RSS before", "MB", "-", None),
    ("churn_rss_growth_mb", "1,000,000 acquire/release, 10 scopes: RSS growth", "MB", "flat (< 2)", lambda v: v < 2),
    ("stop_ms", "stop(), no client ever connected", "ms", "<= 50", lambda v: v <= 50),
    ("stop_threads_left", "  runs that left a thread behind", "", "0", lambda v: v == 0),
    ("expires_depth_1_us", "expires() bookkeeping, stack depth 1", "µs", "<= 3", lambda v: v <= 3),
    ("expires_depth_50_us", "expires() bookkeeping, stack depth 50", "µs", "<= 3", lambda v: v <= 3),
]


def measure(impl, quick):
    """Every figure for one implementation, as a flat dict."""
    tmp = tempfile.mkdtemp(prefix="filetimer-bench-")
    path = os.path.join(tmp, "bench.fifo")
    runs = 3 if quick else 5
    figures = {}
    try:
        figures.update(bench_pair(impl, path, runs, 2000 if quick else 20000))
        figures.update(bench_ingest(impl, path, 1 if quick else 3, 5000 if quick else 25000))
        for max_interval in (0.1, 10):
            expiry_runs = 5 if quick else 20
            if impl == "torch":  # a torch server costs seconds to import, and at max_interval 10 waits up to 10 s
                expiry_runs = 1 if quick else (2 if max_interval == 10 else 3)
            result = bench_expiry(impl, path, expiry_runs, max_interval)
            figures["expiry_%s_median_ms" % max_interval] = result["median_ms"]
            figures["expiry_%s_max_ms" % max_interval] = result["max_ms"]
        figures.update(bench_idle(impl, path, 2 if quick else 4))
        figures.update(bench_many(impl, path, 100000, 1 if quick else 3))
        churn = bench_churn(impl, path, 100000 if quick else 1000000)
        figures["churn_rss_before_mb"] = churn["churn_rss_before_mb"]
        figures["churn_rss_growth_mb"] = churn["churn_rss_after_mb"] - churn["churn_rss_before_mb"]
        figures.update(bench_stop(impl, path, runs if impl == "ours" else 3, 1.0 if impl == "torch" else 10.0))
        uses = 20000 if impl == "ours" else 200
        for depth in (1, 50):
            figures["expires_depth_%d_us" % depth] = bench_expires(impl, depth, runs, uses)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(tmp)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller loads (under 20 s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure instead of a table")
    parser.add_argument("--no-torch", action="store_true", help="measure ours only, even if torch imports")
    args = parser.parse_args()
    started = time.monotonic()
    ours = measure("ours", args.quick)
    torch = None
    if not args.no_torch and importlib.util.find_spec("torch"):
        torch = measure("torch", args.quick)
    failures = 0
    lines = []
    for key, label, unit, target, check in ROWS:
        value = ours[key]
        met = check(value) if check else None
        failures += met is False
        other = torch.get(key) if torch else None
        ratio = value / other if other not in (None, 0) else None
        if args.json:
            print(json.dumps({"figure": key, "label": label.strip(), "unit": unit, "ours": value, "torch": other,
                              "ours_over_torch": ratio, "target": target, "met": met}))
        else:
            lines.append((label, fmt(value, unit), fmt(other, unit) if torch else "", fmt_ratio(ratio) if torch
                          else "", target, {True: "yes", False: "NO", None: ""}[met]))
    if not args.json:
        header = ("figure", "filetimer", "torch 2.13" if torch else "", "ours/torch" if torch else "", "target", "met")
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(6)]
        note = "" if torch else ", torch not importable"
        print("%d cores, CPython %s%s" % (os.cpu_count(), sys.version.split()[0], note))
        for row in [header, *lines]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
        if torch:
            print("torch's servers run at max_interval 1 for ingest and stop() (its stop() waits max_interval);"
                  " its expiry at 10 from 2 runs.")
        verdict = "%d missed" % failures if failures else "every target met"
        print("%.0f s; %s" % (time.monotonic() - started, verdict))
    return 1 if failures else 0


def fmt(value, unit):
    if value is None:
        return "-"
    text = str(value)
    if isinstance(value, float):
        text = "%.0f" % value if abs(value) >= 1000 else "%.3g" % value
    return ("%s %s" % (text, unit)).strip()


def fmt_ratio(ratio):
    return "-" if ratio is None else "%.3g" % ratio


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
