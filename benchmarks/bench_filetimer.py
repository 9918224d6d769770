#!/usr/bin/env python3
"""Measure filetimer against its performance targets (benchmarks/README.md), side by side with torch.

    python benchmarks/bench_filetimer.py                 # every row; about 5 minutes with torch on 2 cores
    python benchmarks/bench_filetimer.py --quick         # fewer runs, smaller loads, no 1,000,000 timers
    python benchmarks/bench_filetimer.py --only pair,expiry --no-torch --json
    python benchmarks/bench_filetimer.py --module DIR    # the filetimer.py in DIR (before/after comparisons)

Run it with a python that has torch==2.13.0 for torch's column; Linux only; filetimer's public API only.
The VM swings 2x minute to minute, so each target is judged within the run: against a "floor" row (the
same system calls with ready-made lines, or SIGKILL -> waitpid sent here) or against the other mode.
"""

import argparse
import contextlib
import functools
import importlib.util
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAR = 600  # seconds: a deadline that never comes during a benchmark
ENV = dict(os.environ, PYTHONWARNINGS="ignore")  # the workers'; load_filetimer puts the module on PYTHONPATH
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # workers import filetimer from its cache, as users' workers do
filetimer = None  # the module under test (load_filetimer)
# A filetimer worker that arms its timer (argv: path, deadline), says when it did, and hangs with 20 more
# threads blocked: at its deadline the server has it dump their stacks, then kills it.
DUMP_WORKER = r"""
import sys, threading, time
import filetimer
for i in range(20):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
filetimer.FileTimerClient(sys.argv[1]).acquire("hung", float(sys.argv[2]))
print(time.time(), flush=True)
time.sleep(600)
"""
# A worker with 111 descendants: 51 `sleep 600`, and 10 chains of 6 processes (sh -> ... -> sleep).
TREE_WORKER = 'for i in $(seq 51); do sleep 600 & done; for i in $(seq 10); do sh -c "$1" "$1" 6 & done; wait'
CHAIN = 'if [ "$1" -le 1 ]; then exec sleep 600; fi; sh -c "$0" "$0" $(($1 - 1)) & wait'


def load_filetimer(directory):
    global filetimer
    if directory:
        sys.path.insert(0, directory)
        ENV["PYTHONPATH"] = directory + os.pathsep + os.environ.get("PYTHONPATH", "")
    filetimer = importlib.import_module("filetimer")


def timer_module(impl):
    if impl == "ours":
        return filetimer
    from torch.distributed.elastic import timer
    logging.getLogger("torch.distributed.elastic.timer.file_based_local_timer").setLevel(logging.CRITICAL)
    return timer


def wire(pid, scope, expiration, sig=9):
    """One request line (torch's server reads the same keys)."""
    return (filetimer.FileTimerRequest(pid, scope, expiration, sig).to_json() + "\n").encode()


class Child(contextlib.AbstractContextManager):
    """``func(conn, *args)`` in a process forked from here, or for torch from a fork server that imported it."""

    def __init__(self, impl, func, *args):
        context = multiprocessing.get_context("fork" if impl == "ours" else "forkserver")  # see main()
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=func, args=(theirs, *args), daemon=True)
        self.process.start()
        theirs.close()
        self.pid = self.process.pid

    def ask(self, message=None):
        if message is not None:
            self.conn.send(message)
        return self.conn.recv()

    def __exit__(self, *exc_info):
        self.process.kill()
        self.process.join()
        self.conn.close()


def run(impl, func, *args):
    """What ``func(conn, *args)`` sends, run in a child process of ``impl``."""
    with Child(impl, func, *args) as child:
        return child.ask()


def serve(conn, impl, path, max_interval, options):
    """A server answering "count", "events" and "stop"; torch's spares itself after a reap (its only change)."""
    events = []
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # its logs

    def log_event(name, request):
        events.append((time.time(), name, getattr(request, "worker_pid", None)))
    if impl == "torch":
        class KeepServing(timer_module(impl).FileTimerServer):
            def _reap_worker(self, worker_pid, signal):
                return worker_pid == os.getpid() or super()._reap_worker(worker_pid, signal)
        server = KeepServing(path, "bench", max_interval=max_interval, log_event=log_event)
    else:
        server = filetimer.FileTimerServer(path, max_interval=max_interval, log_event=log_event, **options)
    server.start()
    conn.send("ready")
    while True:
        command, started = conn.recv(), time.perf_counter()
        if command == "stop":
            server.stop()
            conn.send({"ms": (time.perf_counter() - started) * 1000, "threads": threading.active_count()})
        elif command == "events":  # and forget them
            conn.send([events.pop(0) for _ in range(len(events))])
        else:
            conn.send(server._request_count if impl == "torch" else server.request_count)


class Server(Child):
    """A filetimer or torch server in a child process (a stale FIFO of a killed one is replaced)."""

    def __init__(self, impl, path, max_interval=10.0, **options):
        super().__init__(impl, serve, impl, path, max_interval, options)
        self.ask()

    def wait_for_count(self, target, patience=3.0):
        """Poll until ``target`` requests are counted or the count stops moving: (count, when it last moved)."""
        last, moved = -1, time.time()
        while True:
            count, now = self.ask("count"), time.time()
            if count >= target or now - moved > patience:
                return count, now if count >= target else moved
            last, moved = count, now if count != last else moved
            time.sleep(0.01)  # asking more often makes the server's threads fight for the GIL


def bare_sender(path, keep_open):
    """The floor under a client: (send(line) with a client's system calls alone, a held descriptor)."""
    held = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def reopen_and_write(line):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.fstat(fd)
        try:
            os.write(fd, line)
        except BlockingIOError:  # a full pipe: wait for room, as a client does
            os.set_blocking(fd, True)
            os.write(fd, line)
        os.close(fd)
    return (functools.partial(os.write, held) if keep_open else reopen_and_write), held


def write_pairs(conn, impl, path, pairs, start_at, mode):
    """From ``start_at``, ``pairs`` acquire+release on 10 scopes; sends how many it sent, its errors and CPU."""
    deadline, scopes = time.time() + FAR, ["s%d" % i for i in range(10)]
    if mode == "bare":  # ready-made lines
        send = bare_sender(path, True)[0]
        calls = [(send, (wire(os.getpid(), s, deadline if sig else -1, sig),)) for s in scopes for sig in (9, 0)]
    else:
        client = timer_module(impl).FileTimerClient(path, **({"keep_open": True} if mode == "keep" else {}))
        calls = [call for s in scopes for call in ((client.acquire, (s, deadline)), (client.release, (s,)))]
    sent = errors = 0
    while time.time() < start_at:
        pass
    cpu = time.process_time()
    for i in range(2 * pairs):
        call, args = calls[i % 20]
        try:
            call(*args)
            sent += 1
        except Exception:
            errors += 1
    conn.send({"sent": sent, "errors": errors, "cpu": time.process_time() - cpu})


def flood(conn, path):
    """A hostile writer: 4 KB writes of tiny lines ("1") until killed."""
    fd, block = os.open(path, os.O_WRONLY), b"1\n" * 2048
    while True:
        os.write(fd, block)


def client_pairs(conn, client_impl, path, runs, count, keep_open=None, floor=False):
    """µs per acquire+release through a client (server in another process), its errors, and the floor."""
    client = timer_module(client_impl).FileTimerClient(path, **({} if keep_open is None else {"keep_open": keep_open}))

    def pair():
        client.acquire("pair", time.time() + FAR)
        client.release("pair")
    result = dict(zip(("pair", "errors"), per_call_us(pair, runs, count)))
    if floor:  # on a FIFO of its own that this process reads between pairs: no server to wake
        os.mkfifo(path + ".floor")
        reader = os.open(path + ".floor", os.O_RDWR | os.O_NONBLOCK)
        send, held = bare_sender(path + ".floor", keep_open)
        lines = wire(os.getpid(), "pair", time.time() + FAR), wire(os.getpid(), "pair", -1, 0)
        drain = functools.partial(os.read, reader, 65536)
        result["floor"] = per_call_us(lambda: send(lines[0]) + send(lines[1]), runs, count, drain)[0]
        for fd in (held, reader):
            os.close(fd)
        os.unlink(path + ".floor")
    conn.send(result)


def expires_us(conn, impl, depth, runs, uses):
    """µs per ``with expires(...)`` with the default scope at a stack depth, client I/O excluded."""
    expires, calls = timer_module(impl).expires, []
    client = types.SimpleNamespace(acquire=lambda scope, at: calls.append(1), release=lambda scope: calls.append(-1))

    def at_depth(n):
        if n > 1:
            return at_depth(n - 1)
        started = time.perf_counter()
        for _ in range(uses):
            with expires(after=60, client=client):
                pass
        return (time.perf_counter() - started) / uses * 1e6
    results = [at_depth(depth) for _ in range(runs)]
    if len(calls) != 2 * runs * uses or sum(calls):
        raise RuntimeError("expires() made %d calls, %d more acquires than releases" % (len(calls), sum(calls)))
    conn.send({"us": statistics.median(results)})


def read_all(stream, first):
    """Read ``stream`` to its end; the time of its first byte into ``first``."""
    for _ in iter(functools.partial(stream.read1, 65536), b""):
        first[:] = first or [time.time()]


def per_call_us(call, runs, count, between=lambda: None):
    """(median over runs of the median µs of ``call()``, calls that raised); ``between`` runs untimed."""
    medians, errors = [], 0
    for _ in range(runs):
        samples = []
        for _ in range(count):
            started = time.perf_counter_ns()
            try:
                call()
            except Exception:
                errors += 1
            samples.append(time.perf_counter_ns() - started)
            between()
        medians.append(statistics.median(samples) / 1000)
    return statistics.median(medians), errors


# --- processes, /proc, statistics ----------------------------------------------------------------
def sleeper():
    """A worker that sleeps; its timers are written for it here (importing torch would take it seconds)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def end(process, status=None):
    """Kill a subprocess unless it ended (``status``: what a waitpid here returned), and reap it."""
    if status is not None:
        process.returncode = status
    elif process.poll() is None:
        process.kill()
    process.wait()


def processes():
    """{(pid, start time): parent's pid} of the live processes (zombies excluded), from /proc."""
    found = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError), open("/proc/%s/stat" % name, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
            found.update({(int(name), int(fields[19])): int(fields[1])} if fields[0] != b"Z" else {})
    return found


def descendants(pid):
    """{(pid, start time)} of the live descendants of ``pid``."""
    live, found, todo = processes(), set(), [pid]
    while todo:
        children = {child for child, parent in live.items() if parent == todo[-1]}
        found, todo = found | children, todo[:-1] + [child for child, _ in children]
    return found


def proc(pid):
    """CPU seconds of all the process's threads, wake-ups (sleeps that ended) of all but its main one, RSS (MB)."""
    cpu = wakeups = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
            cpu += int(f.read().split()[0]) / 1e9  # ns, unlike /proc/<pid>/stat's ticks
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            status = f.read()
        wakeups += int(re.search(r"\nvoluntary_ctxt_switches:\s*(\d+)", status).group(1)) if int(tid) != pid else 0
    return {"cpu": cpu, "wakeups": wakeups, "rss": int(re.search(r"VmRSS:\s*(\d+)", status).group(1)) / 1024}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def maximum(values):
    return max((v for v in values if v is not None), default=None)


# --- the benchmark: a method per row group, and the measurements they share ----------------------
class Bench:
    def __init__(self, quick, torch):
        self.quick, self.impls, self.rows, self.heading = quick, ["ours", "torch"] if torch else ["ours"], [], ""
        self.runs, self.tmp = 3 if quick else 5, tempfile.mkdtemp(prefix="filetimer-bench-")
        self.path = os.path.join(self.tmp, "bench.fifo")

    def n(self, quick, full):
        return quick if self.quick else full

    def row(self, label, unit, value, field=None, at_most=None, at_least=None, note=""):
        """A row of ``value`` (filetimer's), or {impl: {field: value}}; a target limits filetimer's value."""
        ours, torch = (value, None) if field is None else ((value.get(i) or {}).get(field) for i in ("ours", "torch"))
        limit, sign = (at_most, "<=") if at_most is not None else (at_least, ">=")
        met = None if limit is None else ours is not None and (ours <= limit if sign == "<=" else ours >= limit)
        self.heading = self.heading if label.startswith(" ") else label
        self.rows.append({"figure": label if label == self.heading else self.heading + " |" + label[1:], "unit": unit,
                          "label": label, "ours": ours, "torch": torch, "met": met,
                          "ours_over_torch": ours / torch if torch and ours is not None else None,
                          "target": "-" if limit is None else "0" if limit == 0 else sign + " " + fmt(limit) + note})

    @contextlib.contextmanager
    def sleeping(self):
        """The pid of a sleeper that lives until the block ends (it holds timers that never expire)."""
        process = sleeper()
        try:
            yield process.pid
        finally:
            end(process)

    def write(self, data):
        """Write ``data`` to the FIFO, waiting up to 5 s for a reader."""
        for _ in range(500):
            with contextlib.suppress(OSError), open(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK), "wb") as f:
                os.set_blocking(f.fileno(), True)
                return f.write(data)
            time.sleep(0.01)
        raise RuntimeError("no server reads " + self.path)

    def register(self, server, pid, scope, count, expiration, sig=9):
        """(requests counted, s until they were) of ``count`` ready-made requests written at once."""
        data, base = b"".join(wire(pid, scope % i, expiration, sig) for i in range(count)), server.ask("count")
        started = time.time()
        self.write(data)
        counted, done = server.wait_for_count(base + count)
        return counted - base, done - started

    def ingest(self, impl, mode, runs, pairs, **options):
        """Requests/s from 4 writer processes, requests lost, errors, CPU per request (torch's at max_interval 1)."""
        max_interval = 1.0 if impl == "torch" else 10.0
        r = {"rates": [], "sent": 0, "errors": 0, "cpu": 0.0, "server": 0.0, "n": 0}
        with Server(impl, self.path, max_interval, **options) as server:
            for _ in range(runs):
                base, cpu, start_at, sent = server.ask("count"), proc(server.pid)["cpu"], time.time() + 0.5, r["sent"]
                writers = [Child(impl, write_pairs, impl, self.path, pairs, start_at, mode) for _ in range(4)]
                server.wait_for_count(base + 4 * pairs * 2, patience=max_interval + 1.5)
                for writer in writers:
                    with writer:
                        r.update((key, r[key] + value) for key, value in writer.ask().items())
                count, done = server.wait_for_count(base + r["sent"] - sent, patience=max_interval + 0.5)
                r["server"], r["n"] = r["server"] + proc(server.pid)["cpu"] - cpu, r["n"] + count - base
                r["rates"].append((count - base) / (done - start_at))
        n = max(r["n"], 1)
        return dict(r, rps=median(r["rates"]), lost=r["sent"] - r["n"], server_us=r["server"] / n * 1e6,
                    writer_us=r["cpu"] / n * 1e6)

    def kills(self, server, deadlines, patience=5):
        """ms from each deadline to the death of a sleeper with that timer, and to the kill event; misses."""
        workers, dead, sent, ended, gave_up = [sleeper() for _ in deadlines], [], [], {}, threading.Event()
        try:
            time.sleep(0.3)  # until they sleep
            armed = [self.write(wire(w.pid, "w", at)) and time.time() < at - 0.002 for w, at in zip(workers, deadlines)]
            # Waited for in turn (exact when each dies before the next deadline); after ``patience`` s, killed here.
            timer = threading.Timer(max(deadlines) - time.time() + patience, lambda: gave_up.set() or [
                os.kill(w.pid, signal.SIGKILL) for w in workers if w.pid not in ended])
            timer.start()
            for worker in workers:
                status = os.waitpid(worker.pid, 0)[1]
                ended[worker.pid] = (None if gave_up.is_set() else time.time(), status)
                end(worker, status)
            timer.cancel()
        finally:
            for worker in workers:
                end(worker)
        kills = {pid: when for when, name, pid in server.ask("events") if name == "kill worker process"}
        for worker, deadline, in_time in zip(workers, deadlines, armed):
            died, status = ended[worker.pid]
            if in_time and died is not None and status == signal.SIGKILL:
                dead.append((died - deadline) * 1000)
                sent.append((kills[worker.pid] - deadline) * 1000 if worker.pid in kills else None)
        return {"median": median(dead), "max": maximum(dead), "sent": median(sent), "dead": dead,
                "misses": len(deadlines) - len(dead)}

    def pair(self):
        runs, count, r = self.runs, self.n(2000, 10000), {}
        for mode, keep_open in (("default", None), ("keep_open", True), ("closing", False)):
            with Server("ours", self.path):
                r[mode] = run("ours", client_pairs, "ours", self.path, runs, count, keep_open, keep_open is not None)
        if "torch" in self.impls:
            with Server("torch", self.path):
                r["torch"] = run("torch", client_pairs, "torch", self.path, runs, self.n(2000, 5000))
                r["on_torch"] = run("ours", client_pairs, "ours", self.path, runs, self.n(2000, 5000))
        d, k, c, on_torch, t = r["default"], r["keep_open"], r["closing"], r.get("on_torch", {}), r.get("torch")
        self.row("acquire+release pair, default client (server: another process)", "µs", dict(ours=d, torch=t), "pair")
        self.row("  default / keep_open=True, same run", "", d["pair"] / k["pair"], at_most=1.2)
        self.row("acquire+release pair, keep_open=True", "µs", k["pair"])
        self.row("  floor: its two os.write calls alone, ready-made lines", "µs", k["floor"])
        self.row("  keep_open=True / floor", "", k["pair"] / k["floor"], at_most=3)
        self.row("acquire+release pair, keep_open=False (write and close)", "µs", c["pair"])
        self.row("  floor: its calls alone (open, fstat, write, close; twice)", "µs", c["floor"])
        self.row("  keep_open=False / floor", "", c["pair"] / c["floor"], at_most=1.6)
        if t:
            self.row("acquire+release pair, default client, torch's server", "µs", dict(ours=on_torch, torch=t), "pair")
            self.row("  / the keep_open=False floor", "", on_torch["pair"] / c["floor"], at_most=1.6)
        errors = {"ours": sum(r[m]["errors"] for m in r if m != "torch"), "torch": (t or {}).get("errors")}
        self.row("  pair errors (every client)", "", {i: {"n": v} for i, v in errors.items()}, "n", at_most=0)

    def ingest_rows(self):
        r = {mode: self.ingest("ours", mode, self.n(1, 3), self.n(5000, 12500)) for mode in ("default", "bare", "keep")}
        torch = {impl: self.ingest(impl, "default", 1, 5000) for impl in self.impls[1:]}
        for mode, label in (("default", "ingest, 4 writer processes, default client"),
                            ("bare", "  floor: 4 writers of bare os.write, ready-made lines"),
                            ("keep", "ingest, 4 writer processes, keep_open=True")):
            both = dict(torch if mode == "default" else {}, ours=r[mode])
            self.row(label, "req/s", both, "rps")
            self.row("  writers' CPU per request", "µs", both, "writer_us")
            self.row("  server's CPU per request", "µs", both, "server_us")
        self.row("  keep_open=True / floor", "", r["keep"]["rps"] / r["bare"]["rps"], at_least=0.75)
        self.row("  default / keep_open=True, same run", "", r["default"]["rps"] / r["keep"]["rps"], at_least=0.9)
        for field, label in (("lost", "  requests lost (sent - counted), all writers"), ("errors", "  client errors")):
            self.row(label, "", dict(torch, ours={field: sum(v[field] for v in r.values())}), field, at_most=0)

    def state(self):
        """Ingest (keep_open=True) with a state file and without, runs alternating."""
        state_file, rates = self.path + ".state", {False: [], True: []}
        for _ in range(self.n(1, 3)):
            for on in (False, True):
                options = {"state_file": state_file} if on else {}
                rates[on].append(self.ingest("ours", "keep", 1, self.n(5000, 12500), **options)["rps"])
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(state_file)
        self.row("ingest, keep_open=True, no state file", "req/s", median(rates[False]))
        self.row("ingest, keep_open=True, with a state file", "req/s", median(rates[True]))
        self.row("  with / without, same run", "", median(rates[True]) / median(rates[False]), at_least=0.8)

    def expiry(self):
        """Deadlines at seeded random phases of max_interval 0.1 and 10, the same for both implementations."""
        latencies, misses = [], 0
        for _ in range(self.n(5, 12)):  # the floor: SIGKILL sent here -> waitpid of an idle sleeper
            worker, _ = sleeper(), time.sleep(0.1)
            started = time.perf_counter()
            os.kill(worker.pid, signal.SIGKILL)
            end(worker, os.waitpid(worker.pid, 0)[1])
            latencies.append((time.perf_counter() - started) * 1000)
        floor = statistics.median(latencies)
        for max_interval, window in ((0.1, self.n(1, 2)), (10, self.n(2, 10))):
            rng, offsets, r = random.Random(int(max_interval * 10)), [0, 0], {}
            while any(b - a < 0.02 for a, b in zip(offsets, offsets[1:])):  # uniform in the window, so at random
                offsets = sorted(rng.uniform(0, window) for _ in range(self.n(6, 20)))  # phases of max_interval
            for impl in self.impls:
                with Server(impl, self.path, max_interval) as server:
                    r[impl] = self.kills(server, [time.time() + 0.5 + o for o in offsets], 2 * max_interval + 5)
            misses += sum(v["misses"] for v in r.values())
            self.row("expiry at a random phase, max_interval %g: median" % max_interval, "ms", r, "median",
                     at_most=floor + 1, note=" (floor+1)")
            self.row("  same, max", "ms", r, "max", at_most=10)
            self.row("  server's share (deadline -> kill sent): median", "ms", r, "sent")
        self.row("  workers armed late, spared or killed by another signal", "", misses, at_most=0)
        self.row("  floor: SIGKILL -> waitpid of such a worker, sent here", "ms", floor)

    def dump(self, grace=0.1):
        """A DUMP_WORKER, its stderr read here: deadline -> first byte of the dump, -> worker dead."""
        first_ms, dead_ms, misses, rng = [], [], 0, random.Random(5)
        with Server("ours", self.path, 10.0, dump_grace=grace):
            for _ in range(self.n(3, 7)):
                deadline, first = time.time() + 0.4 + rng.uniform(0, 0.1), []
                worker = subprocess.Popen([sys.executable, "-c", DUMP_WORKER, self.path, repr(deadline)], env=ENV,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                reader = threading.Thread(target=read_all, args=(worker.stderr, first))
                reader.start()
                in_time = float(worker.stdout.readline() or "inf") < deadline - 0.002
                status, dead = os.waitpid(worker.pid, 0)[1], (time.time() - deadline) * 1000
                reader.join(5)
                end(worker, status)
                ok = in_time and first and status == signal.SIGKILL
                misses += not ok
                first_ms += [(first[0] - deadline) * 1000] if ok else []
                dead_ms += [dead] if ok else []
        self.row("stack dump: deadline -> first byte on the worker's stderr", "ms", median(first_ms), at_most=5)
        self.row("  same, max", "ms", maximum(first_ms))
        self.row("stack dump: deadline -> worker dead (dump_grace 100 ms)", "ms", median(dead_ms),
                 at_most=grace * 1000 + 5, note=" (grace+5)")
        self.row("  runs without a dump or a SIGKILL, or armed late", "", misses, at_most=0)

    def tree(self):
        """A worker with 111 descendants hits its deadline: deadline -> worker dead, worker -> last descendant."""
        r, rng = {}, random.Random(111)
        for impl in self.impls:
            after, dead, left = [], [], 0
            with Server(impl, self.path, 0.1):
                for _ in range(self.n(2, 5) if impl == "ours" else 1):
                    worker, tree = subprocess.Popen(["sh", "-c", TREE_WORKER, "tree", CHAIN]), set()
                    try:
                        while len(tree) < 111:
                            time.sleep(0.02)
                            tree = descendants(worker.pid)
                        deadline = time.time() + 0.05 + rng.uniform(0, 0.1)
                        self.write(wire(worker.pid, "tree", deadline))
                        end(worker, os.waitpid(worker.pid, 0)[1])
                        died = time.time()
                        dead.append((died - deadline) * 1000)
                        while tree and time.time() - died < 1:
                            tree &= processes().keys()
                        left += len(tree)
                        after.append(None if tree else (time.time() - died) * 1000)
                    finally:
                        end(worker)
                        for pid, _ in tree & processes().keys():  # ours only: whatever the server spared
                            with contextlib.suppress(ProcessLookupError):  # gone since
                                os.kill(pid, signal.SIGKILL)
            r[impl] = {"after": median(after), "after_max": maximum(after), "dead": median(dead), "left": left}
        self.row("tree kill, 111 descendants: all dead after the worker", "ms", r, "after", at_most=50)
        self.row("  same, max", "ms", r, "after_max")
        self.row("  descendants alive 1 s after the worker (all runs)", "", r, "left", at_most=0)
        self.row("  deadline -> worker dead, worker with 111 descendants", "ms", r, "dead")

    def idle(self, max_interval=1.0):
        """Wake-ups per max_interval and CPU of a server with one far timer, from just after a wake-up."""
        r = {}
        for impl in self.impls:
            intervals = self.n(2, 4) if impl == "ours" else 2
            with self.sleeping() as pid, Server(impl, self.path, max_interval) as server:
                self.write(wire(pid, "idle", time.time() + 3600))
                server.wait_for_count(1)
                time.sleep(max_interval + 0.2)
                wakeups, seconds = proc(server.pid)["wakeups"], (intervals + 0.5) * max_interval
                while proc(server.pid)["wakeups"] == wakeups:  # the window opens just after a wake-up
                    time.sleep(0.001)
                before, _, after = proc(server.pid), time.sleep(seconds), proc(server.pid)
                r[impl] = {"wakeups": (after["wakeups"] - before["wakeups"]) / intervals,
                           "cpu": (after["cpu"] - before["cpu"]) / seconds * 1000}
        self.row("idle, one timer: wake-ups per max_interval", "", r, "wakeups", at_most=1)
        self.row("idle, one timer: CPU", "ms/s", r, "cpu")

    def many(self, timers=100000, impls=None, register_s=0.5, cpu=2, rss=None):
        """s to register far timers, then CPU and RSS at max_interval 0.1: 100,000 (torch too), or 1,000,000."""
        r, seconds = {}, self.n(1, 3)
        for impl in impls or self.impls:
            options = {} if impl == "torch" else {"max_timers_per_pid": timers, "max_timers": 2 * timers}
            with self.sleeping() as pid, Server(impl, self.path, 0.1, **options) as server:
                count, registered = self.register(server, pid, "t%d", timers, time.time() + 3600)
                before, _, after = proc(server.pid), time.sleep(seconds), proc(server.pid)
                r[impl] = {"register": registered, "cpu": (after["cpu"] - before["cpu"]) / seconds * 1000,
                           "rss": after["rss"], "missing": timers - count}
        self.row("{:,} active timers: time to register".format(timers), "s", r, "register", at_most=register_s)
        self.row("  CPU at max_interval 0.1", "ms/s", r, "cpu", at_most=cpu)
        self.row("  server RSS", "MB", r, "rss", at_most=rss)
        self.row("  requests not counted", "", r, "missing", at_most=0)

    def million(self):
        self.many(1000000, ["ours"], register_s=None, cpu=None, rss=300)

    def stop(self):
        """stop() with no client ever connected (torch's waits max_interval: 1 s here), threads left behind."""
        r = {}
        for impl in self.impls:
            reports = []
            for _ in range(self.runs if impl == "ours" else 2):
                with Server(impl, self.path, 10.0 if impl == "ours" else 1.0) as server:
                    reports.append(time.sleep(0.05) or server.ask("stop"))
            r[impl] = {"ms": median([x["ms"] for x in reports]), "leaked": sum(x["threads"] > 1 for x in reports)}
        self.row("stop(), no client ever connected", "ms", r, "ms", at_most=50)
        self.row("  runs that left a thread behind", "", r, "leaked", at_most=0)

    def expires(self):
        for depth in (1, 50):
            r = {i: run(i, expires_us, i, depth, self.runs, 20000 if i == "ours" else 200) for i in self.impls}
            self.row("expires() bookkeeping, stack depth %d" % depth, "µs", r, "us", at_most=3)

    def restart(self, timers=10000):
        """A server with 10,000 armed timers is SIGKILLed, a worker's deadline passes, a server restarts."""
        state_file, ready, dead = self.path + ".state", [], []
        with self.sleeping() as pid:
            for _ in range(self.n(3, 7)):
                with Server("ours", self.path, 10.0, state_file=state_file, dump_grace=0) as server:
                    self.register(server, pid, "t%d", timers, time.time() + FAR)
                    worker = sleeper()
                    self.write(wire(worker.pid, "overdue", time.time() + 0.1))
                    time.sleep(0.05)
                time.sleep(0.1)  # a crash (SIGKILL): the deadline passes while no server runs
                restarted = time.time()
                with Server("ours", self.path, 10.0, state_file=state_file, dump_grace=0):
                    ready.append((time.time() - restarted) * 1000)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        worker.wait(5)
                    dead.append((time.time() - restarted) * 1000 if worker.returncode == -signal.SIGKILL else None)
                    end(worker)
                os.unlink(state_file)
        self.row("crash + restart, 10,000 armed timers: restart -> server ready (replay)", "ms", median(ready))
        self.row("  restart -> overdue worker dead", "ms", median(dead), at_most=350, note=" (0.3 s grace + 50)")
        self.row("  same, max", "ms", maximum(dead))
        self.row("  runs whose worker was not killed", "", dead.count(None), at_most=0)

    def hostile(self):
        """Kill latency under a flood of tiny lines from 2 writers, and 1 ms behind 100,000 report-only expiries."""
        runs, quiet = self.n(3, 7), []
        with Server("ours", self.path) as server, Child("ours", flood, self.path), Child("ours", flood, self.path):
            time.sleep(0.2)
            flooded = self.kills(server, [time.time() + 0.6 + 0.2 * i for i in range(runs)])
        with Server("ours", self.path, 10.0, max_timers_per_pid=200000) as server:
            for _ in range(runs):
                with self.sleeping() as pid:
                    expiry_at = time.time() + 4
                    self.register(server, pid, "q%d", 100000, expiry_at, 0)
                    quiet.append(self.kills(server, [expiry_at + 0.001]))
        quiet = {"dead": [v for r in quiet for v in r["dead"]], "misses": sum(r["misses"] for r in quiet)}
        for label, r in (("kill under a flood of tiny lines from 2 writers", flooded),
                         ("kill 1 ms behind 100,000 report-only expiries", quiet)):
            self.row(label + ": deadline -> dead, median", "ms", median(r["dead"]), at_most=50)
            self.row("  same, max", "ms", maximum(r["dead"]))
        self.row("  runs whose worker armed late or was not killed", "", flooded["misses"] + quiet["misses"], at_most=0)


SECTIONS = {"pair": Bench.pair, "ingest": Bench.ingest_rows, "state": Bench.state, "expiry": Bench.expiry,
            "dump": Bench.dump, "tree": Bench.tree, "idle": Bench.idle, "many": Bench.many, "stop": Bench.stop,
            "expires": Bench.expires, "restart": Bench.restart, "hostile": Bench.hostile, "million": Bench.million}


def fmt(value, unit=""):
    if value is None:
        return "-"
    text = str(value) if isinstance(value, int) else "%.0f" % value if abs(value) >= 1000 else "%.3g" % value
    return ("%s %s" % (text, unit)).strip()


def print_table(b, header):
    rows = [("figure", "filetimer", "torch 2.13", "ours/torch", "target", "met")]
    rows += [(r["label"], fmt(r["ours"], r["unit"]), fmt(r["torch"], r["unit"]), fmt(r["ours_over_torch"]),
              r["target"], {True: "yes", False: "NO", None: ""}[r["met"]]) for r in b.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    print(header)
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller loads, no 1,000,000 timers")
    parser.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    parser.add_argument("--no-torch", action="store_true", help="measure filetimer only, even if torch imports")
    parser.add_argument("--only", metavar="SECTIONS", help="comma-separated, of: " + ",".join(SECTIONS))
    parser.add_argument("--module", metavar="DIR", help="the directory of the filetimer.py to measure (default: "
                        "the one PYTHONPATH names, else this checkout's)")
    args = parser.parse_args()
    sections = [s for s in SECTIONS if s != "million" or not args.quick] if args.only is None else args.only.split(",")
    if set(sections) - set(SECTIONS):
        parser.error("unknown sections: %s" % ", ".join(sorted(set(sections) - set(SECTIONS))))
    load_filetimer(os.path.abspath(args.module) if args.module else None if importlib.util.find_spec("filetimer")
                   else ROOT)
    torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    multiprocessing.set_forkserver_preload(["__main__", "torch.distributed.elastic.timer"])  # imported once
    started, b = time.monotonic(), Bench(args.quick, torch)
    loop_us = functools.partial(timeit.repeat, "sum(range(1000))", number=1000, repeat=5)
    with open("/proc/loadavg") as f:
        header = "%d cores, CPython %s, %s%s%s; load average %s at the start" % (
            os.cpu_count(), sys.version.split()[0], filetimer.__file__, "" if torch else ", no torch",
            ", --quick" if args.quick else "", " ".join(f.read().split()[:3]))
    try:
        b.row("reference: sum(range(1000)) here and now, best of 5 (machine speed)", "µs", min(loop_us()) * 1e3)
        for name in sections:
            print("[%5.1f s] %s" % (time.monotonic() - started, name), file=sys.stderr, flush=True)
            SECTIONS[name](b)
        b.row("  the same at the end", "µs", min(loop_us()) * 1e3)
    finally:
        shutil.rmtree(b.tmp)
    failures = sum(r["met"] is False for r in b.rows)
    if args.json:
        print("\n".join(json.dumps(r, ensure_ascii=False) for r in [{"header": header}, *b.rows]))
    else:
        print_table(b, header)
        print("%.0f s; %s" % (time.monotonic() - started, "%d missed" % failures if failures else "every target met"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
