#!/usr/bin/env python3
"""Measure filetimer against the SPEC's performance targets, side by side with torch.

    python benchmarks/bench_filetimer.py            # every row; about 2.5 minutes with torch on 2 cores
    python benchmarks/bench_filetimer.py --quick    # fewer runs and smaller loads, under a minute
    python benchmarks/bench_filetimer.py --json     # one JSON object per figure
    python benchmarks/bench_filetimer.py --only pair,dump   # some sections (see --help)

Where torch imports (``pip install torch==2.13.0`` into a throwaway venv and run
this script with that venv's python), the rows torch can do are also measured
with torch's FileTimerServer/FileTimerClient; rows it cannot do (``keep_open``,
``reset()``, stack dumps, ...) show "-". Every figure is the median of several
runs unless it says max. Linux only (it reads /proc).

Servers run in their own processes, forked (with the ingest writers) from one
process per implementation that imported it once: torch takes seconds to
import. So a server's RSS counts only the library pages it touched.

Expiry: deadlines fall at random phases of the server's ``max_interval`` (the
same seeded phases for filetimer and torch); the latency runs from each
worker's deadline to its parent's ``waitpid`` returning. The "server's share"
rows stop at the server's "kill worker process" event instead; the rest is
the kernel ending the worker and waking its parent. --quick spreads the
phases of the 10 s interval over 2 s only.

Rows that start with "floor:" measure, in the same run, what the machine
costs without filetimer's code: the same system calls with ready-made lines,
or SIGKILL -> waitpid of the same worker sent by this script. What lies above
a floor is filetimer's; a target below its floor is out of this machine's reach.

The last row times a fixed pure-Python loop: on a busy or slower machine every
figure grows with it.
"""

import argparse
import array
import fcntl
import importlib.util
import json
import logging
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import filetimer  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="ignore")
# Children import filetimer from its bytecode cache, as users' workers do: compiling it in each worker
# costs tens of milliseconds and leaves a bigger process, slower to end (about 0.3 ms of every expiry).
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
FAR = 600  # seconds: a deadline that never comes during a benchmark

# A server in a child process, answering "count", "events" and "stop" on stdin.
# argv: impl path max_interval options (JSON keyword arguments for filetimer's server).
# Both servers' log_event callbacks record when each event happened ("events"
# returns and forgets them). torch's server SIGKILLs its own process after
# every reap; this one skips that last step (and only that), so one server
# serves many expiry runs.
SERVER = r"""
import json, os, sys, threading, time
impl, path, max_interval, options = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
events = []

def log_event(name, request):
    events.append((time.time(), name, request.worker_pid if request is not None else None))

if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerServer

    class KeepServing(FileTimerServer):
        def _reap_worker(self, worker_pid, signal):
            return True if worker_pid == os.getpid() else super()._reap_worker(worker_pid, signal)

    server = KeepServing(path, "bench", max_interval=max_interval, log_event=log_event)
    count, timers = (lambda: server._request_count), (lambda: len(server._timers))
else:
    import filetimer
    server = filetimer.FileTimerServer(path, max_interval=max_interval, log_event=log_event, **options)
    count, timers = (lambda: server.request_count), (lambda: len(server.timers()))
server.start()
print("ready", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "stop":
        started = time.perf_counter()
        server.stop()
        print(json.dumps({"stop": time.perf_counter() - started, "threads": threading.active_count()}), flush=True)
        break
    if command == "events":
        taken, events[:] = events[:], []
        print(json.dumps({"events": taken}), flush=True)
    else:
        print(json.dumps({"count": count(), "timers": timers()}), flush=True)
"""

# A writer process: argv impl path pairs start_at keep_open; acquire/release pairs on 10 scopes.
WRITER = r"""
import json, sys, time
impl, path, pairs, start_at, keep_open = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerClient
    client = FileTimerClient(path)
elif keep_open.startswith("bare"):  # the floor: os calls with ready-made lines, no client
    import os, filetimer

    class Bare:
        def __init__(self):
            self.reopen = keep_open == "bare-reopen"  # open, fstat, write, close per request
            self.fd = None if self.reopen else os.open(path, os.O_WRONLY)
            self.lines = {}

        def acquire(self, scope, deadline):
            self.write(scope, deadline, 9)

        def release(self, scope):
            self.write(scope, -1, 0)

        def write(self, scope, deadline, sig):
            line = self.lines.get((scope, sig))
            if line is None:
                line = self.lines[scope, sig] = filetimer._wire_line(
                    filetimer.FileTimerRequest(os.getpid(), scope, deadline, sig))
            if not self.reopen:
                os.write(self.fd, line)
                return
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.fstat(fd)
            try:
                os.write(fd, line)
            except BlockingIOError:  # a full pipe: wait for room, as the client does
                os.set_blocking(fd, True)
                os.write(fd, line)
            os.close(fd)

    client = Bare()
else:
    from filetimer import FileTimerClient
    client = FileTimerClient(path, keep_open={"1": True, "0": False}.get(keep_open))  # "auto": the default
sent = errors = 0
kinds = set()
while time.time() < start_at:
    pass
cpu = time.process_time()
for i in range(pairs):
    for call, args in ((client.acquire, ("s%d" % (i % 10), time.time() + 600)), (client.release, ("s%d" % (i % 10),))):
        try:
            call(*args)
            sent += 1
        except Exception as e:
            errors += 1
            kinds.add(type(e).__name__)
cpu = time.process_time() - cpu
print(json.dumps({"sent": sent, "errors": errors, "kinds": sorted(kinds), "cpu": cpu}), flush=True)
"""

# A filetimer worker: it starts ``threads`` threads, all blocked (to be dumped),
# says "ready", reads a wall-clock deadline on stdin, arms its own timer for it,
# prints when it did, and hangs. argv: path dump_stacks threads.
HUNG_WORKER = r"""
import sys, threading, time
import filetimer
path, dump_stacks, threads = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
never = threading.Event()
for i in range(threads):
    threading.Thread(target=never.wait, name="blocked-%d" % i, daemon=True).start()
client = filetimer.FileTimerClient(path, dump_stacks=dump_stacks)
print("ready", flush=True)
deadline = float(sys.stdin.readline())
client.acquire("hung", deadline)
print(time.time(), flush=True)
time.sleep(600)
"""


def hung_worker(path, dump_stacks, threads=0, **popen_options):
    """A HUNG_WORKER that has said "ready"; ``arm(worker, deadline)`` sets it off."""
    worker = subprocess.Popen([sys.executable, "-c", HUNG_WORKER, path, "1" if dump_stacks else "0", str(threads)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, text=True, **popen_options)
    if worker.stdout.readline().strip() != "ready":
        raise RuntimeError("a worker did not start")
    return worker


def arm(worker, deadline):
    worker.stdin.write(repr(deadline) + "\n")
    worker.stdin.flush()


def armed_in_time(worker, deadline):
    """Whether the worker armed its timer before its deadline (else its latency means nothing)."""
    return float(worker.stdout.readline() or "inf") <= deadline - 0.002


def close_pipes(worker):
    for pipe in (worker.stdin, worker.stdout, worker.stderr):
        if pipe is not None:
            pipe.close()


# A worker with 111 descendants: 51 children `sleep 600`, and 10 chains of 6
# processes each (sh -> sh -> sh -> sh -> sh -> sleep). argv[1]: the chain script.
TREE_WORKER = 'for i in $(seq 51); do sleep 600 & done; for i in $(seq 10); do sh "$1" 6 & done; wait'
CHAIN = 'if [ "$1" -le 1 ]; then exec sleep 600; fi\nsh "$0" $(($1 - 1)) &\nwait\n'
TREE_SIZE = 111


# A process that imports one implementation once, then forks ready-made
# children that run SERVER or WRITER: torch takes seconds to import, and a pass
# starts a dozen servers and writers. It reads (code, argv) messages on a
# SOCK_SEQPACKET socket (argv[1]), with the child's stdin and stdout as file
# descriptors attached, and answers with the child's pid. Children are reaped
# by the kernel (SIGCHLD ignored); their stderr is the spawner's (a log file).
SPAWNER = r"""
import array, json, os, signal, socket, sys, traceback
if sys.argv[1] == "torch":
    import torch.distributed.elastic.timer
else:
    import filetimer
control = socket.socket(fileno=int(sys.argv[2]))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
while True:
    fds = array.array("i")
    message, ancillary, _, _ = control.recvmsg(1 << 16, socket.CMSG_SPACE(2 * fds.itemsize))
    if not message:
        break
    for _, _, data in ancillary:
        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    code, argv = json.loads(message)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(fds[0], 0)
            os.dup2(fds[1], 1)
            for fd in fds:
                os.close(fd)
            sys.stdin, sys.stdout, sys.argv = open(0), open(1, "w"), ["-c", *argv]
            exec(compile(code, "<bench child>", "exec"), {"__name__": "__main__"})
            sys.stdout.flush()
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    for fd in fds:
        os.close(fd)
    control.sendall(str(pid).encode())
"""


class Spawner:
    """The SPAWNER process of one implementation; ``spawn(code, argv)`` returns a Child."""

    def __init__(self, impl):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen([sys.executable, "-c", SPAWNER, impl, str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stderr=self.log,
                                        env=ENV)
        theirs.close()
        self.control = ours

    def spawn(self, code, argv):
        child_in, stdin = os.pipe()
        stdout, child_out = os.pipe()
        try:
            fds = array.array("i", [child_in, child_out])
            self.control.sendmsg([json.dumps([code, argv]).encode()],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
            pid = int(self.control.recv(64))
        finally:
            os.close(child_in)
            os.close(child_out)
        return Child(pid, os.fdopen(stdin, "w"), os.fdopen(stdout))

    def log_tail(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self):
        self.control.close()  # the spawner reads end-of-file and exits
        self.process.wait()
        self.log.close()


class Child:
    """A process forked by a Spawner: not ours to waitpid; gone when its /proc entry is."""

    def __init__(self, pid, stdin, stdout):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.start_time = proc_state(pid)[1] if proc_state(pid) else None

    def running(self):
        state = proc_state(self.pid)
        return state is not None and state[1] == self.start_time and state[0] != "Z"

    def kill(self):
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        while self.running():
            time.sleep(0.001)
        self.stdin.close()
        self.stdout.close()


SPAWNERS = {}


def spawner(impl):
    if impl not in SPAWNERS:
        SPAWNERS[impl] = Spawner(impl)
    return SPAWNERS[impl]


class ServerProcess:
    """A filetimer or torch server in a child process (forked by the implementation's Spawner)."""

    def __init__(self, impl, path, max_interval=10.0, **options):
        self.impl, self.path = impl, path
        self.child = spawner(impl).spawn(SERVER, [impl, path, str(max_interval), json.dumps(options)])
        if self.child.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("%s server did not start:\n%s" % (impl, spawner(impl).log_tail()))
        self.pid = self.child.pid

    def ask(self, command="count"):
        self.child.stdin.write(command + "\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def count(self):
        return self.ask()["count"]

    def kill_times(self):
        """{pid: wall-clock time} of the "kill worker process" events since the last call."""
        return {pid: when for when, name, pid in self.ask("events")["events"] if name == "kill worker process"}

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
        self.child.kill()
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


def proc_state(pid):
    """(state letter, start time) of a process from /proc/<pid>/stat, or None if there is none."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[19])


def alive(pid, start_time):
    """Whether the process that had this start time still runs (a zombie or a reused pid does not count)."""
    state = proc_state(pid)
    return state is not None and state[1] == start_time and state[0] != "Z"


def descendants(pid):
    """{pid: start time} of every live descendant of pid, from /proc."""
    found = {}
    for child in filetimer._children(pid):
        state = proc_state(child)
        if state is not None and state[0] != "Z":
            found[child] = state[1]
            found.update(descendants(child))
    return found


def client_module(impl):
    if impl == "torch":
        from torch.distributed.elastic import timer
        # Its client logs a traceback for each retry while its server's thread has not opened the FIFO yet.
        logging.getLogger("torch.distributed.elastic.timer.file_based_local_timer").setLevel(logging.CRITICAL)
        return timer
    return filetimer


def request_line(impl, pid, scope, expiration, sig=9):
    return (client_module(impl).FileTimerRequest(pid, scope, expiration, sig).to_json() + "\n").encode()


def send(impl, path, pid, scope, expiration, sig=9):
    """One request on behalf of another process's pid, with the implementation's own client (no stack dump)."""
    module = client_module(impl)
    if impl == "torch":
        module.FileTimerClient(path)._send_request(module.FileTimerRequest(pid, scope, expiration, sig))
    else:
        request = module.FileTimerRequest(pid, scope, expiration, sig, filetimer._process_start_time(pid))
        module.FileTimerClient(path, dump_stacks=False)._send_request(request)


def write_lines(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:65536]):]
    finally:
        os.close(fd)


def random_phases(count, max_interval, gap, seed, window=None):
    """``count`` offsets in seconds, sorted, no two closer than ``gap``, at random phases of ``max_interval``.

    With a ``window`` (one interval or more), drawn uniformly in it, again
    until no two are too close; else a random walk whose steps are ``gap``
    plus a uniform fraction of the interval, for intervals too short to hold
    them all. The gap keeps one kill from delaying the next.
    """
    rng = random.Random(seed)
    if window is None:
        offsets, at = [], 0.0
        for _ in range(count):
            at += gap + rng.uniform(0, max_interval)
            offsets.append(at)
        return offsets
    for _ in range(10000):
        offsets = sorted(rng.uniform(0, window) for _ in range(count))
        if all(b - a >= gap for a, b in zip(offsets, offsets[1:])):
            return offsets
    raise ValueError("cannot place %d deadlines %g s apart in %g s" % (count, gap, window))


def wait_all(pids, patience):
    """{pid: (wall-clock time waitpid returned, status)} of children; time None for those that did not end
    within ``patience`` seconds and were killed here."""
    ended = {}

    def wait(pid):
        status = os.waitpid(pid, 0)[1]
        ended[pid] = (time.time(), status)

    threads = [threading.Thread(target=wait, args=(pid,), daemon=True) for pid in pids]
    for thread in threads:
        thread.start()
    give_up = time.monotonic() + patience
    for pid, thread in zip(pids, threads):
        thread.join(max(0.0, give_up - time.monotonic()))
        if thread.is_alive():  # never killed: end it ourselves, and do not count it
            os.kill(pid, signal.SIGKILL)
            thread.join()
            ended[pid] = (None, ended[pid][1])
    return ended


# --- the rows ----------------------------------------------------------------------


def bench_pair(impl, path, runs, pairs, keep_open=None, our_client=False):
    """Median µs for one acquire+release through the client, server in another process; then reset()."""
    with ServerProcess(impl, path) as server:
        if impl == "torch" and not our_client:
            client = client_module(impl).FileTimerClient(path)
        else:
            client = filetimer.FileTimerClient(path, keep_open=keep_open)  # dump_stacks=True, as users have it
        medians, errors = [], 0
        for _ in range(runs):
            samples = []
            for _ in range(pairs):
                started = time.perf_counter_ns()
                try:
                    client.acquire("pair", time.time() + FAR)
                    client.release("pair")
                except Exception:
                    errors += 1
                samples.append(time.perf_counter_ns() - started)
            medians.append(statistics.median(samples) / 1000)
        result = {"pair_us": statistics.median(medians), "pair_errors": errors, "pair_attempts": runs * pairs}
        if impl != "torch" or our_client:  # torch's timers have no reset()
            resets = []
            with filetimer.expires(FAR, scope="reset", client=client) as timer:
                for _ in range(runs):
                    samples = []
                    for _ in range(pairs):
                        started = time.perf_counter_ns()
                        timer.reset()
                        samples.append(time.perf_counter_ns() - started)
                    resets.append(statistics.median(samples) / 1000)
            result["reset_us"] = statistics.median(resets)
            result["floor_us"] = bare_pair_us(path, runs, pairs, keep_open is not False)
        client_close = getattr(client, "close", None)
        if client_close:
            client_close()
        server.count()
    return result


def unread(fd):
    """Bytes in the pipe of ``fd`` that no one has read yet."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def bare_pair_us(path, runs, pairs, keep_open):
    """Median µs for the system calls of one pair alone, with ready-made lines: the floor under the pair.

    keep_open: two os.write on a held fd; else each write between an os.open,
    the os.fstat the client checks the FIFO with, and an os.close. Between
    pairs it waits until the server has read the pipe empty, as it has when
    a client's pair starts (these calls alone would outrun it and fill the pipe).
    """
    pid = os.getpid()
    lines = [filetimer._wire_line(filetimer.FileTimerRequest(pid, "pair", time.time() + FAR, 9, None, 12)),
             filetimer._wire_line(filetimer.FileTimerRequest(pid, "pair", -1, 0))]
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
    held = os.open(path, flags)
    medians = []
    try:
        for _ in range(runs):
            samples = []
            for _ in range(pairs):
                started = time.perf_counter_ns()
                for line in lines:
                    if keep_open:
                        os.write(held, line)
                    else:
                        fd = os.open(path, flags)
                        os.fstat(fd)
                        os.write(fd, line)
                        os.close(fd)
                samples.append(time.perf_counter_ns() - started)
                while unread(held):
                    pass
            medians.append(statistics.median(samples) / 1000)
    finally:
        os.close(held)
    return statistics.median(medians)


def bench_ingest(impl, path, runs, pairs_per_writer, mode="default", writers=4, **options):
    """Requests/s from 4 writer processes, with requests lost and client errors.

    Also the CPU time per request of the server and of the writers: with 2
    cores for all five processes, the rate cannot exceed 2 s / (their sum).
    ``mode``: "default" or "keep_open" (filetimer's client), or the floors of
    their rates, with ready-made lines and no client: "bare-reopen" (os.open,
    os.fstat, os.write, os.close per request) and "bare" (os.write alone).

    torch's server counts requests once per max_interval, so it runs at 1 s here.
    """
    rates, lost, errors, kinds, crashed, server_cpu, writer_cpu, counted = [], 0, 0, set(), 0, 0.0, 0.0, 0
    max_interval = 1.0 if impl == "torch" else 10.0
    with ServerProcess(impl, path, max_interval, **options) as server:
        for _ in range(runs):
            base = server.count()
            cpu = cpu_seconds(server.pid)
            start_at = time.time() + 0.5
            children = [spawner(impl).spawn(WRITER, [impl, path, str(pairs_per_writer), str(start_at),
                                                     {"default": "auto", "closing": "0", "keep_open": "1"}.get(
                                                         mode, mode)])
                        for _ in range(writers)]
            sent = 0
            server.wait_for_count(base + writers * pairs_per_writer * 2, patience=max_interval + 1.5)
            for child in children:
                out = child.stdout.read()
                child.kill()
                if not out.strip():
                    crashed += 1
                    continue
                report = json.loads(out)
                sent += report["sent"]
                errors += report["errors"]
                kinds.update(report["kinds"])
                writer_cpu += report["cpu"]
            count, done = server.wait_for_count(base + sent, patience=max_interval + 0.5)
            server_cpu += cpu_seconds(server.pid) - cpu
            counted += count - base
            lost += sent - (count - base)
            rates.append((count - base) / (done - start_at))
    return {"ingest_rps": statistics.median(rates), "ingest_lost": lost, "ingest_errors": errors,
            "ingest_error_kinds": sorted(kinds), "ingest_crashed_writers": crashed,
            "server_cpu_us": server_cpu / max(counted, 1) * 1e6, "writer_cpu_us": writer_cpu / max(counted, 1) * 1e6}


def bench_expiry(impl, path, max_interval, groups):
    """ms from each worker's deadline to its death seen by its parent's waitpid.

    ``groups`` is a list of (server options, dump_stacks, offsets): each gets
    its own server, all running at once, and a worker per offset whose
    deadline is that many seconds after a common start (offsets of different
    groups never coincide, so kills do not queue behind each other). Each
    group's result also has the ms from the deadline to its server's "kill
    worker process" event (the log_event callback, called just after the
    signal was sent): the server's share; the rest is the kernel ending the
    process and waking its parent. ``misses`` counts workers armed too late
    to measure, not killed, or killed by another signal than SIGKILL.

    filetimer's workers arm their own timers with FileTimerClient(dump_stacks=...);
    torch's get theirs sent by this process with torch's client (importing torch in
    every worker would take seconds).
    """
    servers, workers, deadlines, ended, kills = [], [], {}, {}, {}
    try:
        for number, (options, dump_stacks, offsets) in enumerate(groups):
            fifo = "%s.%d" % (path, number)
            servers.append(ServerProcess(impl, fifo, max_interval, **options))
            for offset in offsets:
                worker = sleeper() if impl == "torch" else hung_worker(fifo, dump_stacks)
                workers.append((number, fifo, offset, worker))
        start = time.time() + 0.1
        for _, fifo, offset, worker in workers:
            deadlines[worker.pid] = start + offset
            if impl == "torch":
                send(impl, fifo, worker.pid, "hung", start + offset)
            else:
                arm(worker, start + offset)
        for *_, worker in workers:
            if impl != "torch" and not armed_in_time(worker, deadlines[worker.pid]):
                del deadlines[worker.pid]
        last = max(offset for _, _, offset, _ in workers)
        ended = wait_all([worker.pid for _, _, _, worker in workers], patience=last + 2 * max_interval + 5)
        for server in servers:
            kills.update(server.kill_times())
    finally:
        for _, _, _, worker in workers:
            if worker.pid in ended:
                worker.returncode = ended[worker.pid][1]
            else:
                end(worker)
            close_pipes(worker)
        for server in servers:
            server.close()
    results = []
    for number in range(len(groups)):
        latencies, signalled, misses = [], [], 0
        for _, _, _, worker in (w for w in workers if w[0] == number):
            died, status = ended.get(worker.pid, (None, 0))
            if (worker.pid not in deadlines or died is None
                    or not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)):
                misses += 1
                continue
            latencies.append((died - deadlines[worker.pid]) * 1000)
            if worker.pid in kills:
                signalled.append((kills[worker.pid] - deadlines[worker.pid]) * 1000)
        results.append({"median_ms": median(latencies), "max_ms": max(latencies, default=None),
                        "signal_median_ms": median(signalled), "signal_max_ms": max(signalled, default=None),
                        "misses": misses})
    return results


def median(values):
    return statistics.median(values) if values else None


def read_all(fd, first, chunks):
    """Read fd to its end into ``chunks``; put the wall-clock time of the first byte in ``first``."""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        if not first:
            first.append(time.time())
        chunks.append(chunk)


def kill_floor_ms(path, runs, threads=0):
    """Median ms from SIGKILL to waitpid of an idle HUNG_WORKER killed here, no server: the floor under
    "deadline -> worker dead" (the kernel ending the worker and waking its parent)."""
    latencies = []
    for _ in range(runs):
        worker = hung_worker(path, False, threads)
        time.sleep(0.05)
        started = time.perf_counter()
        os.kill(worker.pid, signal.SIGKILL)
        os.waitpid(worker.pid, 0)
        latencies.append((time.perf_counter() - started) * 1000)
        worker.returncode = -signal.SIGKILL
        close_pipes(worker)
    return statistics.median(latencies)


def bench_dump(path, runs, threads=20):
    """A hung filetimer worker with ``threads`` blocked threads, its stderr a pipe read here.

    ms from the deadline to the first byte of the dump, and to the worker's
    death (waitpid); how many runs' dumps lacked a thread (main + ``threads``).
    """
    first_ms, dead_ms, incomplete, misses = [], [], 0, 0
    header = re.compile(rb"^(?:Current thread|Thread) 0x[0-9a-f]+", re.MULTILINE)
    rng = random.Random(5)
    with ServerProcess("ours", path, 10.0) as server:  # dump_grace and kill_tree at their defaults
        for _ in range(runs):
            worker = hung_worker(path, True, threads, stderr=subprocess.PIPE)
            first, chunks = [], []
            reader = threading.Thread(target=read_all, args=(worker.stderr.fileno(), first, chunks), daemon=True)
            reader.start()
            deadline = time.time() + 0.1 + rng.uniform(0, 0.1)
            arm(worker, deadline)
            in_time = armed_in_time(worker, deadline)
            status = os.waitpid(worker.pid, 0)[1]
            died = time.time()
            worker.returncode = status
            reader.join(5)
            close_pipes(worker)
            if not in_time or not first or not os.WIFSIGNALED(status) or os.WTERMSIG(status) != signal.SIGKILL:
                misses += 1
                continue
            first_ms.append((first[0] - deadline) * 1000)
            dead_ms.append((died - deadline) * 1000)
            incomplete += len(header.findall(b"".join(chunks))) != threads + 1
        server.count()
    return {"dump_first_byte_ms": statistics.median(first_ms) if first_ms else None,
            "dump_first_byte_max_ms": max(first_ms) if first_ms else None,
            "dump_dead_ms": statistics.median(dead_ms) if dead_ms else None,
            "dump_grace_ms": filetimer._DUMP_GRACE * 1000, "dump_incomplete": incomplete, "dump_misses": misses}


def bench_tree(impl, path, runs, tmp):
    """A worker with 111 descendants hits its deadline; ms from its death to the last descendant's.

    Also: deadline -> worker dead, and descendants still alive 1 s after the worker died
    (torch signals the worker alone).
    """
    chain = os.path.join(tmp, "chain.sh")
    with open(chain, "w") as f:
        f.write(CHAIN)
    after_worker, worker_ms, left_alive, misses = [], [], 0, 0
    rng = random.Random(111)
    with ServerProcess(impl, path, 0.1) as server:
        for _ in range(runs):
            worker = subprocess.Popen(["sh", "-c", TREE_WORKER, "tree", chain])
            tree = {}
            try:
                give_up = time.monotonic() + 10
                while len(tree) < TREE_SIZE and time.monotonic() < give_up:
                    time.sleep(0.02)
                    tree = descendants(worker.pid)
                if len(tree) != TREE_SIZE:
                    raise RuntimeError("the tree worker has %d descendants, not %d" % (len(tree), TREE_SIZE))
                deadline = time.time() + 0.05 + rng.uniform(0, 0.1)
                send(impl, path, worker.pid, "tree", deadline)
                os.waitpid(worker.pid, 0)
                died = time.time()
                worker.returncode = -signal.SIGKILL
                worker_ms.append((died - deadline) * 1000)
                remaining = dict(tree)
                while remaining and time.time() - died < 1:
                    for pid, start_time in list(remaining.items()):
                        if not alive(pid, start_time):
                            del remaining[pid]
                if remaining:
                    left_alive += len(remaining)
                else:
                    after_worker.append((time.time() - died) * 1000)
            finally:
                end(worker)
                for pid, start_time in tree.items():  # ours only: whatever the server spared
                    if alive(pid, start_time):
                        os.kill(pid, signal.SIGKILL)
        server.count()
    return {"tree_after_worker_ms": statistics.median(after_worker) if after_worker else None,
            "tree_after_worker_max_ms": max(after_worker) if after_worker else None,
            "tree_worker_ms": statistics.median(worker_ms), "tree_left_alive": left_alive, "tree_misses": misses}


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


def bench_many(impl, path, timers, seconds, **options):
    """Register ``timers`` active timers; time it, then CPU per second and RSS at max_interval 0.1."""
    worker = sleeper()
    try:
        with ServerProcess(impl, path, 0.1, **options) as server:
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


def bench_state(path, runs, pairs_per_writer, timers):
    """The durable state's cost, each figure back to back with and without it.

    Ingest with keep_open writers (runs alternate), 100,000 armed timers (RSS
    and CPU at max_interval 0.1), and rewrites of the state file meanwhile.
    """
    state_file = path + ".state"
    rates = {"on": [], "off": []}
    for _ in range(runs):
        for key, options in (("off", {}), ("on", {"state_file": state_file})):
            rates[key].append(bench_ingest("ours", path, 1, pairs_per_writer, "keep_open", **options)["ingest_rps"])
            if os.path.exists(state_file):
                os.unlink(state_file)
    figures = {"state_ingest_off_rps": statistics.median(rates["off"]),
               "state_ingest_on_rps": statistics.median(rates["on"])}
    figures["state_ingest_ratio"] = figures["state_ingest_on_rps"] / figures["state_ingest_off_rps"]
    for key, options in (("off", {}), ("on", {"state_file": state_file})):
        many = bench_many("ours", path, timers, 2, max_timers_per_pid=timers, **options)
        figures["state_many_%s_rss_mb" % key] = many["many_rss_mb"]
        figures["state_many_%s_cpu_ms_per_s" % key] = many["many_cpu_ms_per_s"]
        figures["state_many_%s_register_s" % key] = many["many_register_s"]
    figures["state_many_rss_ratio"] = figures["state_many_on_rss_mb"] / figures["state_many_off_rss_mb"]
    figures["state_file_mb"] = os.path.getsize(state_file) / 2**20
    os.unlink(state_file)
    return figures


def bench_restart(path, runs, timers):
    """ms from a server's restart to the kill of a worker whose deadline passed while no server ran.

    The crashed server (SIGKILL) had ``timers`` other timers armed; the
    restarted one replays them from the state file first.
    """
    state_file = path + ".state"
    worker, latencies, misses = sleeper(), [], 0
    try:
        for _ in range(runs):
            server = ServerProcess("ours", path, 10.0, state_file=state_file, dump_grace=0)
            write_lines(path, b"".join(request_line("ours", worker.pid, "t%d" % i, time.time() + FAR)
                                       for i in range(timers)))
            server.wait_for_count(timers)
            hung = hung_worker(path, dump_stacks=False)
            deadline = time.time() + 0.1
            arm(hung, deadline)
            if not armed_in_time(hung, deadline):
                misses += 1
            time.sleep(0.05)
            server.close()  # SIGKILL: the deadline passes while no server runs
            time.sleep(0.1)
            restarted = time.time()
            server = ServerProcess("ours", path, 10.0, state_file=state_file, dump_grace=0)
            try:
                hung.wait(5)
                latencies.append((time.time() - restarted) * 1000)
            except subprocess.TimeoutExpired:
                misses += 1
                hung.kill()
                hung.wait()
            close_pipes(hung)
            server.close()
            os.unlink(state_file)
    finally:
        end(worker)
    return {"restart_kill_ms": statistics.median(latencies), "restart_kill_max_ms": max(latencies),
            "restart_misses": misses}


# A hostile writer: 4 KB writes of "1\n" lines until argv[2] seconds have passed.
FLOOD = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
block, end = b"1\n" * 2048, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    os.write(fd, block)
"""


def kill_latency_ms(path, deadline_in):
    """ms from a hung worker's deadline to its death seen here; None if it armed too late or was not killed."""
    worker = hung_worker(path, dump_stacks=False)
    try:
        deadline = time.time() + deadline_in
        arm(worker, deadline)
        if not armed_in_time(worker, deadline):
            return None
        worker.wait(10)
        return (time.time() - deadline) * 1000 if worker.returncode == -signal.SIGKILL else None
    except subprocess.TimeoutExpired:
        return None
    finally:
        end(worker)
        close_pipes(worker)


def bench_hostile(path, runs):
    """Kill latency under a flood of tiny lines from 2 writers, and behind 100,000 report-only expiries."""
    flooded, quiet, misses = [], [], 0
    with ServerProcess("ours", path, 10.0, dump_grace=0):
        floods = [subprocess.Popen([sys.executable, "-c", FLOOD, path, str(runs * 0.6 + 1)], env=ENV)
                  for _ in range(2)]
        time.sleep(0.2)
        for _ in range(runs):
            flooded.append(kill_latency_ms(path, 0.3))
        for flood in floods:
            end(flood)
    with ServerProcess("ours", path, 10.0, dump_grace=0, max_timers_per_pid=200000) as server:
        for _ in range(runs):
            silent = sleeper()
            base = server.count()
            expiry = time.time() + 2.5
            write_lines(path, b"".join(request_line("ours", silent.pid, "q%d" % i, expiry, 0) for i in range(100000)))
            server.wait_for_count(base + 100000)
            quiet.append(kill_latency_ms(path, expiry + 0.001 - time.time()))
            end(silent)
    misses = flooded.count(None) + quiet.count(None)
    flooded, quiet = [v for v in flooded if v is not None], [v for v in quiet if v is not None]
    return {"flood_kill_ms": median(flooded), "flood_kill_max_ms": max(flooded, default=None),
            "quiet_kill_ms": median(quiet), "quiet_kill_max_ms": max(quiet, default=None), "hostile_misses": misses}


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
    """A client that does no I/O, so only the bookkeeping of expires() is timed; it counts its calls."""

    def __init__(self):
        self.acquired = self.released = 0

    def acquire(self, scope_id, expiration_time):
        self.acquired += 1

    def release(self, scope_id):
        self.released += 1


def bench_expires(impl, depth, runs, uses, in_thread=False):
    """µs per ``with expires(...)`` with the default scope, client I/O excluded, at a stack depth.

    For filetimer it also checks the bookkeeping: one acquire and one release
    per use, and no timer left on the thread's nesting stacks.
    """
    expires = client_module(impl).expires
    client = _NullClient()
    results = []

    def at_depth(n):
        if n > 1:
            return at_depth(n - 1)
        started = time.perf_counter()
        for _ in range(uses):
            with expires(after=60, client=client):
                pass
        return (time.perf_counter() - started) / uses * 1e6

    def measure_runs():
        results.extend(at_depth(depth) for _ in range(runs))
        if impl != "torch" and (client.acquired != client.released or filetimer._nesting.innermost):
            raise AssertionError("expires() left timers behind: %d acquired, %d released, stacks %r"
                                 % (client.acquired, client.released, filetimer._nesting.innermost))

    if in_thread:
        thread = threading.Thread(target=measure_runs)
        thread.start()
        thread.join()
    else:
        measure_runs()
    if len(results) != runs:
        raise RuntimeError("expires() benchmark failed")
    return statistics.median(results)


def machine_loop_us():
    """A fixed pure-Python loop, to tell a slow or busy machine from a slow filetimer."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


# --- the table ------------------------------------------------------------------------


def at_most(limit):
    return lambda v, figures: v <= limit


def at_least(limit):
    return lambda v, figures: v >= limit


def none(v, figures):
    return v == 0


def half_pair(pair_key):
    return lambda v, figures: v <= figures[pair_key] / 2


def within_grace(v, figures):
    return v <= figures["dump_grace_ms"] + 5


# (key, label, unit, target as text, check(value, all figures) or None)
ROWS = [
    ("pair_default_us", "acquire+release pair, default client (server in another process)", "µs", "-", None),
    ("pair_default_ratio", "  default / keep_open=True, same run", "", "<= 1.2", at_most(1.2)),
    ("pair_keep_open_us", "acquire+release pair, keep_open=True", "µs", "<= 3 x floor",
     lambda v, figures: v <= 3 * figures["pair_keep_open_floor_us"]),
    ("pair_keep_open_floor_us", "  floor: its two os.write calls alone", "µs", "-", None),
    ("pair_ours_on_torch_us", "acquire+release pair, filetimer's default client, torch's server", "µs", "-", None),
    ("pair_closing_us", "acquire+release pair, keep_open=False (write and close, for torch's server)", "µs",
     "<= 1.6 x floor", lambda v, figures: v <= 1.6 * figures["pair_closing_floor_us"]),
    ("pair_closing_floor_us", "  floor: its system calls alone (open, fstat, write, close; twice)", "µs", "-",
     None),
    ("pair_errors", "  pair errors (both clients)", "", "0", none),
    ("reset_default_us", "reset() of an armed timer, default client", "µs", "<= pair/2", half_pair("pair_default_us")),
    ("reset_keep_open_us", "reset() of an armed timer, keep_open=True", "µs", "<= pair/2",
     half_pair("pair_keep_open_us")),
    ("ingest_default_rps", "ingest, 4 writer processes, default client", "req/s", "-", None),
    ("ingest_default_ratio", "  default / keep_open=True, same run", "", ">= 0.9", at_least(0.9)),
    ("ingest_closing_rps", "ingest, 4 writer processes, keep_open=False", "req/s", "-", None),
    ("ingest_default_writer_cpu_us", "  writers' CPU per request", "µs", "-", None),
    ("ingest_default_server_cpu_us", "  server's CPU per request", "µs", "-", None),
    ("ingest_bare_reopen_rps", "  floor: 4 writers of bare open, fstat, write, close; ready-made lines", "req/s", "-",
     None),
    ("ingest_bare_reopen_writer_cpu_us", "  writers' CPU per request", "µs", "-", None),
    ("ingest_bare_reopen_server_cpu_us", "  server's CPU per request", "µs", "-", None),
    ("ingest_keep_open_rps", "ingest, 4 writer processes, keep_open=True", "req/s", ">= 150000", at_least(150000)),
    ("ingest_keep_open_writer_cpu_us", "  writers' CPU per request", "µs", "-", None),
    ("ingest_keep_open_server_cpu_us", "  server's CPU per request", "µs", "-", None),
    ("ingest_bare_rps", "  floor: 4 writers of bare os.write, ready-made lines", "req/s", "-", None),
    ("ingest_bare_writer_cpu_us", "  writers' CPU per request", "µs", "-", None),
    ("ingest_bare_server_cpu_us", "  server's CPU per request", "µs", "-", None),
    ("ingest_lost", "  requests lost (sent - counted), all writers", "", "0", none),
    ("ingest_errors", "  client errors", "", "0", none),
    ("ingest_crashed_writers", "  writers crashed", "", "0", none),
    ("expiry_0.1_median_ms", "expiry at a random phase, max_interval 0.1, worker can't dump: median", "ms", "<= 2",
     at_most(2)),
    ("expiry_0.1_max_ms", "  same, max", "ms", "<= 10", at_most(10)),
    ("expiry_0.1_signal_median_ms", "  server's share (deadline -> kill sent): median", "ms", "-", None),
    ("expiry_0.1_signal_max_ms", "  server's share: max", "ms", "-", None),
    ("expiry_10_median_ms", "expiry at a random phase, max_interval 10, worker can't dump: median", "ms", "<= 2",
     at_most(2)),
    ("expiry_10_max_ms", "  same, max", "ms", "<= 10", at_most(10)),
    ("expiry_10_signal_median_ms", "  server's share (deadline -> kill sent): median", "ms", "-", None),
    ("expiry_10_signal_max_ms", "  server's share: max", "ms", "-", None),
    ("expiry_nodump_0.1_median_ms", "expiry at a random phase, max_interval 0.1, dump_grace=0: median", "ms", "<= 2",
     at_most(2)),
    ("expiry_nodump_0.1_max_ms", "  same, max", "ms", "<= 10", at_most(10)),
    ("expiry_nodump_0.1_signal_median_ms", "  server's share (deadline -> kill sent): median", "ms", "-", None),
    ("expiry_nodump_0.1_signal_max_ms", "  server's share: max", "ms", "-", None),
    ("expiry_nodump_10_median_ms", "expiry at a random phase, max_interval 10, dump_grace=0: median", "ms", "<= 2",
     at_most(2)),
    ("expiry_nodump_10_max_ms", "  same, max", "ms", "<= 10", at_most(10)),
    ("expiry_nodump_10_signal_median_ms", "  server's share (deadline -> kill sent): median", "ms", "-", None),
    ("expiry_nodump_10_signal_max_ms", "  server's share: max", "ms", "-", None),
    ("expiry_misses", "  workers armed late, spared or killed by another signal", "", "0", none),
    ("expiry_floor_ms", "  floor: SIGKILL -> waitpid of such a worker, sent here, no server", "ms", "-", None),
    ("dump_first_byte_ms", "stack dump: deadline -> first byte on the worker's stderr", "ms", "<= 5", at_most(5)),
    ("dump_first_byte_max_ms", "  same, max", "ms", "-", None),
    ("dump_dead_ms", "stack dump: deadline -> worker dead (dump_grace 100 ms)", "ms", "<= grace+5", within_grace),
    ("dump_floor_ms", "  floor: SIGKILL -> waitpid of such a worker (21 threads), sent here", "ms", "-", None),
    ("dump_incomplete", "  dumps missing one of the 21 threads (20 + main)", "", "0", none),
    ("dump_misses", "  runs without a dump or a SIGKILL", "", "0", none),
    ("tree_after_worker_ms", "tree kill, 111 descendants: all dead after the worker", "ms", "<= 50", at_most(50)),
    ("tree_after_worker_max_ms", "  same, max", "ms", "-", None),
    ("tree_left_alive", "  descendants alive 1 s after the worker (all runs)", "", "0", none),
    ("tree_misses", "  runs that could not be measured", "", "0", none),
    ("tree_worker_ms", "  deadline -> worker dead, worker with 111 descendants", "ms", "-", None),
    ("tree_off_worker_ms", "deadline -> worker dead, no children, kill_tree=False", "ms", "-", None),
    ("tree_on_worker_ms", "deadline -> worker dead, no children, kill_tree=True", "ms", "-", None),
    ("tree_off_signal_ms", "  server's share (deadline -> kill sent), kill_tree=False", "ms", "-", None),
    ("tree_on_signal_ms", "  server's share (deadline -> kill sent), kill_tree=True", "ms", "-", None),
    ("idle_wakeups_per_interval", "idle, one timer: wake-ups per max_interval", "", "<= 1", at_most(1)),
    ("idle_cpu_ms_per_s", "idle, one timer: CPU", "ms/s", "-", None),
    ("many_register_s", "100,000 active timers: time to register", "s", "<= 0.5", at_most(0.5)),
    ("many_cpu_ms_per_s", "100,000 active timers: CPU at max_interval 0.1", "ms/s", "<= 2", at_most(2)),
    ("many_rss_mb", "100,000 active timers: server RSS", "MB", "-", None),
    ("state_ingest_off_rps", "durable state: ingest, keep_open, --no-state", "req/s", "-", None),
    ("state_ingest_on_rps", "durable state: ingest, keep_open, with a state file", "req/s", "-", None),
    ("state_ingest_ratio", "  with / without, same run", "", ">= 0.8", at_least(0.8)),
    ("state_many_off_rss_mb", "durable state: 100,000 timers, server RSS without", "MB", "-", None),
    ("state_many_on_rss_mb", "durable state: 100,000 timers, server RSS with", "MB", "-", None),
    ("state_many_rss_ratio", "  with / without", "", "<= 2", at_most(2)),
    ("state_many_on_cpu_ms_per_s", "durable state: 100,000 timers, CPU at max_interval 0.1, with", "ms/s", "<= 2",
     at_most(2)),
    ("state_many_on_register_s", "  time to register them, with (without: next row)", "s", "-", None),
    ("state_many_off_register_s", "  time to register them, without", "s", "-", None),
    ("state_file_mb", "  state file size after registering them", "MB", "-", None),
    ("restart_kill_ms", "crash + restart, 10,000 armed timers: restart -> overdue worker dead", "ms", "<= 50",
     at_most(50)),
    ("restart_kill_max_ms", "  same, max", "ms", "-", None),
    ("restart_misses", "  runs whose worker was not killed, or armed late", "", "0", none),
    ("flood_kill_ms", "kill under a flood of tiny lines from 2 writers: deadline -> dead, median", "ms", "<= 50",
     at_most(50)),
    ("flood_kill_max_ms", "  same, max", "ms", "-", None),
    ("quiet_kill_ms", "kill 1 ms behind 100,000 report-only expiries: deadline -> dead, median", "ms", "<= 50",
     at_most(50)),
    ("quiet_kill_max_ms", "  same, max", "ms", "-", None),
    ("hostile_misses", "  runs whose worker armed late or was not killed", "", "0", none),
    ("million_register_s", "1,000,000 active timers: time to register", "s", "-", None),
    ("million_rss_mb", "1,000,000 active timers: server RSS", "MB", "<= 300", at_most(300)),
    ("million_cpu_ms_per_s", "1,000,000 active timers: CPU at max_interval 0.1", "ms/s", "-", None),
    ("churn_rss_before_mb", "1,000,000 acquire/release, 10 scopes: RSS before", "MB", "-", None),
    ("churn_rss_growth_mb", "1,000,000 acquire/release, 10 scopes: RSS growth", "MB", "flat (< 2)",
     lambda v, figures: v < 2),
    ("stop_ms", "stop(), no client ever connected", "ms", "<= 50", at_most(50)),
    ("stop_threads_left", "  runs that left a thread behind", "", "0", none),
    ("expires_depth_1_us", "expires() bookkeeping, stack depth 1", "µs", "<= 3", at_most(3)),
    ("expires_depth_50_us", "expires() bookkeeping, stack depth 50", "µs", "<= 3", at_most(3)),
    ("expires_thread_us", "expires() bookkeeping, depth 1, in a non-main thread", "µs", "<= 3", at_most(3)),
    ("machine_loop_us", "reference: sum(range(1000)) here and now, best of 5 (machine speed)", "µs", "-", None),
]

SECTIONS = ("pair", "ingest", "expiry", "dump", "tree", "idle", "many", "state", "restart", "hostile", "million",
            "churn", "stop", "expires")


def measure(impl, quick, sections, log):
    """Every figure for one implementation, as a flat dict (rows torch cannot do are left out)."""
    tmp = tempfile.mkdtemp(prefix="filetimer-bench-")
    path = os.path.join(tmp, "bench.fifo")
    runs = 3 if quick else 5
    ours = impl == "ours"
    figures = {}

    def section(name):
        if name in sections:
            log("%s: %s" % (impl, name))
            return True
        return False

    try:
        figures["machine_loop_us"] = machine_loop_us()
        if section("pair"):
            pairs = 2000 if quick else (10000 if ours else 5000)
            result = bench_pair(impl, path, runs, pairs)
            figures["pair_default_us"], figures["pair_errors"] = result["pair_us"], result["pair_errors"]
            if not ours:  # filetimer's default client with torch's server: it must write and close
                figures["pair_ours_on_torch_us"] = bench_pair(impl, path, runs, pairs, our_client=True)["pair_us"]
            if ours:
                figures["reset_default_us"] = result["reset_us"]
                result = bench_pair(impl, path, runs, pairs, keep_open=True)
                figures["pair_keep_open_us"], figures["reset_keep_open_us"] = result["pair_us"], result["reset_us"]
                figures["pair_keep_open_floor_us"] = result["floor_us"]
                figures["pair_errors"] += result["pair_errors"]
                figures["pair_default_ratio"] = figures["pair_default_us"] / figures["pair_keep_open_us"]
                result = bench_pair(impl, path, runs, pairs, keep_open=False)
                figures["pair_closing_us"], figures["pair_closing_floor_us"] = result["pair_us"], result["floor_us"]
                figures["pair_errors"] += result["pair_errors"]
        if section("ingest"):
            for mode in ("default", "closing", "bare-reopen", "keep_open", "bare") if ours else ("default",):
                result = bench_ingest(impl, path, 1 if quick or not ours else 3, 5000 if quick or not ours else 12500,
                                      mode)
                mode = mode.replace("-", "_")
                figures["ingest_%s_rps" % mode] = result["ingest_rps"]
                figures["ingest_%s_server_cpu_us" % mode] = result["server_cpu_us"]
                figures["ingest_%s_writer_cpu_us" % mode] = result["writer_cpu_us"]
                for key in ("ingest_lost", "ingest_errors", "ingest_crashed_writers"):
                    figures[key] = figures.get(key, 0) + result[key]
            if ours:
                figures["ingest_default_ratio"] = figures["ingest_default_rps"] / figures["ingest_keep_open_rps"]
        if section("expiry"):
            figures["expiry_misses"] = 0
            for max_interval in (0.1, 10):
                # Seeded phases, the same for both implementations: filetimer's two variants take every
                # other one, torch the first variant's. --quick: phases of 10 s spread over 2 s only.
                window = None if max_interval < 1 else 2.0 if quick else max_interval
                offsets = random_phases(12 if quick else 40, max_interval, 0.02, int(max_interval * 10), window)
                variants = [("expiry", {}, False, offsets[0::2])]
                if ours:
                    variants.append(("expiry_nodump", {"dump_grace": 0}, True, offsets[1::2]))
                results = bench_expiry(impl, path, max_interval, [variant[1:] for variant in variants])
                for (name, _, _, _), result in zip(variants, results):
                    for figure in ("median_ms", "max_ms", "signal_median_ms", "signal_max_ms"):
                        figures["%s_%s_%s" % (name, max_interval, figure)] = result[figure]
                    figures["expiry_misses"] += result["misses"]
            if ours:
                figures["expiry_floor_ms"] = kill_floor_ms(path, 5 if quick else 12)
        if ours and section("dump"):
            figures.update(bench_dump(path, 3 if quick else 7))
            figures["dump_floor_ms"] = kill_floor_ms(path, 5 if quick else 12, threads=20)
        if section("tree"):
            result = bench_tree(impl, path, 2 if quick else (5 if ours else 1), tmp)
            figures.update(result)
            if ours:
                offsets = random_phases(12 if quick else 24, 0.1, 0.02, seed=7)
                results = bench_expiry(impl, path, 10, [({"kill_tree": False}, False, offsets[0::2]),
                                                        ({"kill_tree": True}, False, offsets[1::2])])
                for kill_tree, result in zip(("off", "on"), results):
                    figures["tree_%s_worker_ms" % kill_tree] = result["median_ms"]
                    figures["tree_%s_signal_ms" % kill_tree] = result["signal_median_ms"]
                    figures["tree_misses"] += result["misses"]
        if section("idle"):
            figures.update(bench_idle(impl, path, 2 if quick or not ours else 4))
        if section("many"):
            figures.update(bench_many(impl, path, 100000, 1 if quick or not ours else 3,
                                      **({"max_timers_per_pid": 100000} if ours else {})))
        if ours and section("state"):
            figures.update(bench_state(path, 1 if quick else 3, 5000 if quick else 12500, 100000))
        if ours and section("hostile"):
            figures.update(bench_hostile(path, 3 if quick else 7))
        if ours and section("million"):
            million = bench_many(impl, path, 1000000, 2, max_timers_per_pid=1000000)
            figures.update({key.replace("many_", "million_"): value for key, value in million.items()})
        if ours and section("restart"):
            figures.update(bench_restart(path, 3 if quick else 7, 10000))
        if section("churn"):
            churn = bench_churn(impl, path, 100000 if quick else 1000000)
            figures["churn_rss_before_mb"] = churn["churn_rss_before_mb"]
            figures["churn_rss_growth_mb"] = churn["churn_rss_after_mb"] - churn["churn_rss_before_mb"]
        if section("stop"):
            figures.update(bench_stop(impl, path, runs if ours else 2, 10.0 if ours else 1.0))
        if section("expires"):
            uses = 20000 if ours else 200
            for depth in (1, 50):
                figures["expires_depth_%d_us" % depth] = bench_expires(impl, depth, runs, uses)
            figures["expires_thread_us"] = bench_expires(impl, 1, runs, uses, in_thread=True)
    finally:
        if impl in SPAWNERS:
            SPAWNERS.pop(impl).close()
        if os.path.exists(path):
            os.unlink(path)
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller loads")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure instead of a table")
    parser.add_argument("--no-torch", action="store_true", help="measure filetimer only, even if torch imports")
    parser.add_argument("--only", metavar="SECTIONS", help="comma-separated sections to run, of: "
                        + ",".join(SECTIONS))
    parser.add_argument("--verbose", action="store_true", help="say on stderr which section runs")
    args = parser.parse_args()
    sections = SECTIONS if args.only is None else tuple(args.only.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error("unknown sections: %s" % ", ".join(sorted(unknown)))

    def log(text):
        if args.verbose:
            print("[%5.1f s] %s" % (time.monotonic() - started, text), file=sys.stderr, flush=True)

    started = time.monotonic()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    ours = measure("ours", args.quick, sections, log)
    torch = None
    if not args.no_torch and importlib.util.find_spec("torch"):
        torch = measure("torch", args.quick, sections, log)
        if "pair_ours_on_torch_us" in torch:  # filetimer's client: its row, with torch's client beside it
            ours["pair_ours_on_torch_us"] = torch["pair_ours_on_torch_us"]
            torch["pair_ours_on_torch_us"] = torch.get("pair_default_us")
    failures = 0
    lines = []
    for key, label, unit, target, check in ROWS:
        if key not in ours:
            continue
        value = ours[key]
        met = check(value, ours) if check and value is not None else (False if check else None)
        failures += met is False
        other = torch.get(key) if torch else None
        ratio = value / other if other not in (None, 0) and value is not None else None
        if args.json:
            print(json.dumps({"figure": key, "label": label.strip(), "unit": unit, "ours": value, "torch": other,
                              "ours_over_torch": ratio, "target": target, "met": met}))
        else:
            lines.append((label, fmt(value, unit), fmt(other, unit) if torch else "", fmt_ratio(ratio) if torch
                          else "", target, {True: "yes", False: "NO", None: ""}[met]))
    if not args.json:
        header = ("figure", "filetimer", "torch 2.13" if torch else "", "ours/torch" if torch else "", "target", "met")
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(6)]
        note = "" if torch else ", torch not importable" if not args.no_torch else ", --no-torch"
        print("%d cores, CPython %s%s%s; load average %s at the start" % (
            os.cpu_count(), sys.version.split()[0], note, ", --quick" if args.quick else "", load))
        for row in [header, *lines]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
        if torch:
            print("torch's servers run at max_interval 1 for ingest and stop() (its stop() waits max_interval); here"
                  " its server does not SIGKILL its own process after a reap, so one server serves many workers.")
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
