#!/usr/bin/env python3
"""Break down two figures of bench_filetimer.py: expiry latency and a client request.

    python benchmarks/where_time_goes.py

1. The kernel alone: SIGKILL -> waitpid of an idle process, /usr/bin/sleep and
   a python sleeper (the floor under "deadline -> worker gone").
2. An expiry, step by step, in a server instrumented in this process: when
   its thread woke, when it began to send SIGSTOP and SIGKILL, when log_event saw the
   kill, and when waitpid returned, each in ms after the deadline; with
   kill_tree on and off.
3. One client request, piece by piece (best of 7 timeit runs each), next to a
   whole acquire with each client mode against a reader that drains the FIFO
   every 2 ms (so the server's own work is not in it).

It patches private names of filetimer to time them; a name that no longer
exists is skipped. Linux only.
"""

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import filetimer  # noqa: E402

PYTHON_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def kernel_kill_latency(command, runs=12):
    """ms from SIGKILL to waitpid returning, for an idle process running ``command``."""
    latencies = []
    for _ in range(runs):
        child = subprocess.Popen(command)
        time.sleep(0.1)
        started = time.perf_counter()
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        latencies.append((time.perf_counter() - started) * 1000)
        child.returncode = -signal.SIGKILL
    return statistics.median(latencies), max(latencies)


def instrument(marks):
    """Wrap private server steps so each records (wall-clock time, step) in ``marks``."""

    def wrap(owner, name, label, before=False):
        original = getattr(owner, name, None)
        if original is None:
            return

        def wrapper(*args, **kwargs):
            if before:
                marks.append((time.time(), label(*args) if callable(label) else label))
            result = original(*args, **kwargs)
            if not before:
                marks.append((time.time(), label(*args) if callable(label) else label))
            return result

        setattr(owner, name, wrapper)

    wrap(filetimer.FileTimerServer, "_wait_for_events", "server thread woke")
    # Marked before the call: a worker woken by SIGKILL from its stop often runs its teardown on the
    # server's core before the call returns.
    wrap(filetimer._Worker, "send_signal", lambda worker, sig: "sending %s" % signal.Signals(sig).name, before=True)
    wrap(filetimer, "_ancestors", "listed the server's ancestors")


def expiry_steps(kill_tree, marks, runs=15):
    """{step: [ms after the deadline]}, from the marks ``instrument`` and log_event leave."""
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timer.fifo")
        server = filetimer.FileTimerServer(path, kill_tree=kill_tree,
                                           log_event=lambda name, request: marks.append((time.time(), name)))
        server.start()
        try:
            client = filetimer.FileTimerClient(path, dump_stacks=False)
            for _ in range(runs):
                worker = subprocess.Popen(PYTHON_SLEEPER)
                time.sleep(0.15)
                deadline = time.time() + 0.05 + random.uniform(0, 0.05)
                request = filetimer.FileTimerRequest(worker.pid, "step", deadline, signal.SIGKILL,
                                                     filetimer._process_start_time(worker.pid))
                client._send_request(request)
                del marks[:]
                os.waitpid(worker.pid, 0)
                marks.append((time.time(), "waitpid returned"))
                worker.returncode = -signal.SIGKILL
                first = {}
                for when, step in marks:
                    if when >= deadline - 0.002:
                        first.setdefault(step, (when - deadline) * 1000)
                for step, ms in first.items():
                    steps.setdefault(step, []).append(ms)
        finally:
            server.stop()
    return steps


def client_pieces():
    """µs per piece of one request, and per whole acquire for both client modes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timer.fifo")
        os.mkfifo(path, 0o600)
        drain = subprocess.Popen([sys.executable, "-c", "import os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
                                  "while True:\n    os.read(fd, 1 << 20)\n    time.sleep(0.002)", path])
        try:
            time.sleep(0.3)
            default = filetimer.FileTimerClient(path)
            held = filetimer.FileTimerClient(path, keep_open=True)
            held.acquire("warm-up", time.time() + 600)
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            names = dict(globals(), default=default, held=held, path=path, fd=fd, filetimer=filetimer,
                         later=time.time() + 600, _signal=__import__("_signal"))
            pieces = [
                ("os.getpid()", "os.getpid()"),
                ("signal.getsignal(SIGUSR2) (the dump check)", "signal.getsignal(signal.SIGUSR2)"),
                ("_signal.getsignal(SIGUSR2) (no enum)", "_signal.getsignal(signal.SIGUSR2)"),
                ("_line_start() (the JSON fields)", "filetimer._line_start(1234, 'pair', later, 9)"),
                ("os.open + os.close of the FIFO", "os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))"),
                ("client._open() + os.close (retry, fstat, owner)", "os.close(default._open())"),
                ("os.fstat(fd)", "os.fstat(fd)"),
                ("acquire, keep_open=True", "held.acquire('pair', later)"),
                ("acquire, default client", "default.acquire('pair', later)"),
                ("release, keep_open=True", "held.release('pair')"),
                ("release, default client", "default.release('pair')"),
                ("reference: sum(range(1000))", "sum(range(1000))"),
            ]
            results = []
            for label, statement in pieces:
                number = 200 if "sum" in statement else 2000
                best = min(timeit.repeat(statement, globals=names, number=number, repeat=7))
                results.append((label, best / number * 1e6))
            os.close(fd)
            held.close()
            return results
        finally:
            drain.kill()
            drain.wait()


def main():
    print("1. the kernel: SIGKILL -> waitpid of an idle process (median, max)")
    for label, command in (("/usr/bin/sleep", ["sleep", "600"]), ("python sleeper", PYTHON_SLEEPER)):
        print("   %-16s %.2f ms, %.2f ms" % (label, *kernel_kill_latency(command)))
    marks = []
    instrument(marks)
    for kill_tree in (True, False):
        print("2. expiry steps, kill_tree=%s, ms after the deadline (median, max)" % kill_tree)
        steps = expiry_steps(kill_tree, marks)
        for step in sorted(steps, key=lambda name: statistics.median(steps[name])):
            print("   %-34s %+7.3f  %+7.3f" % (step, statistics.median(steps[step]), max(steps[step])))
    print("3. one client request, piece by piece (µs, best of 7)")
    for label, us in client_pieces():
        print("   %-50s %7.2f" % (label, us))


if __name__ == "__main__":
    main()
