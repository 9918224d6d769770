"""Tests for filetimer: real processes, real FIFOs, real signals.

Run with ``python -m unittest -v``. No test asserts a tight time: waits are
generous and timing figures live in benchmarks/.
"""

import _thread
import argparse
import atexit
import contextlib
import errno
import faulthandler
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from unittest import mock

import filetimer
from filetimer import FileTimerClient, FileTimerRequest, FileTimerServer

logging.getLogger("filetimer").addHandler(logging.NullHandler())  # kills are logged at WARNING: not in the test output
HERE = os.path.dirname(os.path.abspath(__file__))
# Child processes share one bytecode cache, so each does not compile filetimer.py again (even where
# PYTHONDONTWRITEBYTECODE is set); it is removed when the run ends.
PYCACHE = tempfile.mkdtemp(prefix="filetimer-test-pycache-")
atexit.register(shutil.rmtree, PYCACHE, True)
ENV = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONPYCACHEPREFIX=PYCACHE)
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
# Children run without site: filetimer needs nothing from site-packages, and a site hook (a .pth file)
# can cost tens of milliseconds per process. torch's own workers and servers keep it.
PYTHON = [sys.executable, "-S"]
SLACK = 10.0  # seconds: an upper bound for things that take milliseconds
TIME_LIMIT = 60  # seconds: a test still running then fails instead of hanging the run (most take < 3 s)

# A worker: argv[1] is the FIFO path; the code after the setup is the test's.
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    import filetimer
    path = sys.argv[1]
    filetimer.configure(filetimer.FileTimerClient(path))
""")

# A server in its own process, driven by commands on stdin, so a test can
# freeze it, kill it or shift its wall clock.
SERVER = textwrap.dedent("""
    import json, os, sys, time
    import filetimer
    options = json.loads(sys.argv[2])
    offset = [0.0]
    real_time = time.time
    time.time = lambda: real_time() + offset[0]
    server = filetimer.FileTimerServer(sys.argv[1], max_interval=0.05, **options)
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.partition(" ")
        if command == "shift":
            offset[0] += float(arg)
        elif command == "stop":
            server.stop()
        print(json.dumps([server.request_count, server.rejected_count, len(server.timers())]), flush=True)
""")


def wait_for(predicate, timeout=SLACK, interval=0.01):
    """Poll until predicate() is true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def kill_group(pgid):
    """SIGKILL what is left of a process group a test started (a session leader's pid)."""
    if pgid > 1:  # never 0 (our own group), 1 or a negative number
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def cli(*args, real=None, **kwargs):
    """``python -m filetimer ARGS`` as a CompletedProcess (text stdout and stderr).

    In this process (filetimer.main) where that is safe, unless the test asks for a real process (``real``, or a
    child's ``env``/``stdin``): ``status``, ``--help``/``--version``, ``acquire`` naming its ``--pid``, ``serve``
    invocations that must be refused, and (``real=False``) invocations refused before anything is sent or run.
    Guards fail the test rather than let a command in this process serve, exec, or send for a process it did
    not name. Otherwise a child.
    """
    command = next((a for a in args if not a.startswith("-")), None)
    in_process = not (real or kwargs) and (real is False or (
        command == "status" or (command == "acquire" and "--pid" in args)
        or (command in (None, "serve") and args[-1:] in (("--help",), ("--version",)))
        or (command == "serve" and "--help" not in args)))
    if not in_process:
        kwargs.setdefault("timeout", SLACK * 3)
        return subprocess.run([*PYTHON, "-m", "filetimer", *args], env=kwargs.pop("env", ENV),
                              capture_output=True, text=True, **kwargs)
    made = []

    class Client(FileTimerClient):  # closed when main returns: no handle of the command is left open
        def __init__(self, *a, **k):
            if command == "run" or "--pid" not in args:  # it would send for this process or its parent
                raise AssertionError("filetimer %s would send a request from the test process" % " ".join(args))
            super().__init__(*a, **k)
            made.append(self)

    class RefusedServer(FileTimerServer):  # a serve here must be refused: one that would serve fails the test
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.stop()
            raise AssertionError("filetimer serve %s would have served in the test process" % " ".join(args))

    out, err = io.StringIO(), io.StringIO()
    exec_refused = AssertionError("filetimer %s would exec in the test process" % " ".join(args))
    with mock.patch.object(filetimer, "FileTimerClient", Client), \
            mock.patch.object(filetimer, "FileTimerServer", RefusedServer), \
            mock.patch.object(os, "execvp", side_effect=exec_refused), \
            mock.patch.object(logging, "basicConfig"), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = filetimer.main(list(args))
        except SystemExit as e:  # argparse: usage errors, --help, --version
            status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        finally:
            for client in made:
                client.close()
    return subprocess.CompletedProcess(["filetimer", *args], status, out.getvalue(), err.getvalue())


class TimeLimitExceeded(BaseException):
    """Raised in a test that runs too long: not an Exception (TimeoutError is an OSError), so that code under test
    that catches OSError or Exception cannot swallow it; unittest still reports it as an error and runs the
    cleanups."""


class TimeLimitedTestCase(unittest.TestCase):
    """A test that runs longer than TIME_LIMIT fails instead of hanging the run.

    SIGALRM raises in the main thread, which breaks even a blocking os.open or
    wait (PEP 475 retries a system call only when the handler returns). It
    repeats every second, so a hang in a later subtest or cleanup is broken
    too; faulthandler ends the run if even that does not help.
    """

    def setUp(self):
        armed = [True]

        def expire(signum, frame):
            if armed[0]:
                raise TimeLimitExceeded("test took longer than %g s" % TIME_LIMIT)

        def disarm():
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            faulthandler.cancel_dump_traceback_later()

        previous = signal.signal(signal.SIGALRM, expire)
        self.addCleanup(disarm)  # registered first, so it runs after every other cleanup
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT, 1)
        faulthandler.dump_traceback_later(TIME_LIMIT + 15, exit=True, file=sys.__stderr__)


class FiletimerTestCase(TimeLimitedTestCase):
    """A temporary directory, a FIFO path in it, and cleanup of every child."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="filetimer-test-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.path = os.path.join(self.dir, "timer.fifo")
        self.events = []
        self.event_times = []  # time.monotonic() of each event
        self.servers = []

    def record(self, name, request):
        self.events.append((name, request))
        self.event_times.append(time.monotonic())

    def event_time(self, name):
        """When the first event of that name was reported."""
        return self.event_times[self.event_names().index(name)]

    def event_names(self, pid=None):
        # A server reports a pass's events after its signals: a pass under way (holding the lock) ends first.
        for server in self.servers:
            with server._lock:
                pass
        return [name for name, request in self.events if pid is None or (request and request.worker_pid == pid)]

    def serve(self, **options):
        options.setdefault("file_path", self.path)
        options.setdefault("log_event", self.record)
        options.setdefault("dump_grace", 0)  # no 0.1 s wait per kill: the tests of dumps ask for them
        server = FileTimerServer(**options)
        self.addCleanup(server.stop)
        self.servers.append(server)
        server.start()
        return server

    def spawn(self, args, **kwargs):
        """Start a child; unless told otherwise its stdout is discarded and its stderr (stack dumps, a child
        server's log) goes to the temporary file child.log, not into the test output."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)  # a leaked child must not hold the runner's stdout
        log = None
        if "stderr" not in kwargs:
            log = kwargs["stderr"] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by a cleanup)
            self.addCleanup(log.close)
        child = subprocess.Popen(args, env=kwargs.pop("env", ENV), **kwargs)
        child.log = log
        self.addCleanup(self._reap, child)
        return child

    @staticmethod
    def read_log(child):
        """What the child has written to its stderr so far (see spawn)."""
        child.log.seek(0)
        return child.log.read().decode(errors="replace")

    def spawn_worker(self, code, path=None, **kwargs):
        return self.spawn([*PYTHON, "-c", WORKER + code, path or self.path], **kwargs)

    def spawn_lingering_worker(self, code):
        """A worker that runs code, prints "done", then stays alive until its stdin is closed."""
        return self.spawn_worker(code + "print('done', flush=True)\nsys.stdin.read()\n",
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def spawn_sleeper(self):
        return self.spawn(["sleep", "60"])

    def assert_dead(self, tree):
        """Every process of tree ({pid: start time}) is gone, or goes within SLACK; a zombie counts as gone."""
        self.assertTrue(wait_for(lambda: not any(alive(pid, start) for pid, start in tree.items())),
                        [pid for pid, start in tree.items() if alive(pid, start)])

    def assert_killed(self, *codes, path=None):
        """Run these worker programs side by side: each must be killed (SIGKILL) for its hang."""
        workers = [self.spawn_worker(code, path) for code in codes]
        for code, worker in zip(codes, workers):
            self.assertEqual(worker.wait(SLACK), -signal.SIGKILL, code)

    def start_cli(self, path, *args):
        """``python -m filetimer serve path args`` in a child, once it serves (stdout and stderr piped)."""
        child = self.spawn([*PYTHON, "-m", "filetimer", "serve", path, *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertIn("serving " + path, child.stdout.readline())
        return child

    def spawn_server(self, path=None, **options):
        """A server in a child process, on path (default self.path); returns (process, command function)."""
        child = self.spawn(
            [*PYTHON, "-c", SERVER, path or self.path, json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.assertEqual(child.stdout.readline().strip(), "ready")

        def command(text="count"):
            child.stdin.write(text + "\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())

        return child, command

    @staticmethod
    def _reap(child):
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream:
                stream.close()


def write_raw(path, data):
    """Write bytes straight into the FIFO, as a misbehaving client would."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def line(pid, scope, expiration, sig=9, **extra):
    fields = {"version": 1, "pid": pid, "scope_id": scope, "expiration_time": expiration, "signal": sig}
    fields.update(extra)
    return json.dumps(fields).encode() + b"\n"


FLOOD = textwrap.dedent("""
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY)
    block, end = b"1\\n" * 2048, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        os.write(fd, block)
""")


# A command run with the descriptor limits argv[1] (soft) and argv[2] (hard): the rest of argv.
FD_LIMITED = textwrap.dedent("""
    import os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
    os.execv(sys.executable, [sys.executable, "-S", *sys.argv[3:]])
""")


REUSE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    import filetimer
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "start-time":
        filetimer._HAVE_PIDFD = False
    events = []
    server = filetimer.FileTimerServer(path, max_interval=30, log_event=lambda name, request: events.append(name))
    server.start()

    def spawn_at(pid, code, *args, **kwargs):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        return subprocess.Popen([sys.executable, "-S", "-c", code, *args], **kwargs)

    sleep = "import time; time.sleep(30)"
    # 1. A worker arms a timer and exits; a new process gets its pid before the deadline.
    worker = spawn_at(5000, "import filetimer, sys, time; c = filetimer.FileTimerClient(sys.argv[1]); "
                      "c.acquire('step', time.time() + 0.5); sys.stdin.read()", path, stdin=subprocess.PIPE)
    while not server.timers():
        time.sleep(0.01)
    first_deadline = time.time() + 0.5  # later than the worker's
    worker.stdin.close()
    worker.wait()
    heir = spawn_at(5000, sleep)
    # 2. A request naming a dead process's start time arrives after its pid was reused.
    dead = spawn_at(6000, sleep)
    time.sleep(0.05)
    dead_start = filetimer._process_start_time(dead.pid)
    dead.kill(); dead.wait()
    time.sleep(0.05)
    heir2 = spawn_at(6000, sleep)
    stale_deadline = time.time() + 0.2
    filetimer.FileTimerClient(path)._send_line(
        filetimer.FileTimerRequest(heir2.pid, "stale", stale_deadline, 9, start_time=dead_start)._line())
    time.sleep(max(first_deadline, stale_deadline) + 0.2 - time.time())  # past both deadlines
    print(json.dumps({"pids": [worker.pid, heir.pid, dead.pid, heir2.pid],
                      "alive": [heir.poll() is None, heir2.poll() is None], "events": events}))
    for p in (heir, heir2):
        p.kill(); p.wait()
    server.stop()
""")


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


TORCH_WORKER = textwrap.dedent("""
    import sys, time
    from torch.distributed.elastic import timer
    timer.configure(timer.FileTimerClient(sys.argv[1]))
    with timer.expires(after=0.2):
        time.sleep(60)
""")


TORCH_SERVER = textwrap.dedent("""
    import sys, time
    from torch.distributed.elastic.timer import FileTimerServer
    server = FileTimerServer(sys.argv[1], "interop", max_interval=0.1)
    server.start()
    print("ready", flush=True)
    time.sleep(60)
""")


def saved_timers(state_file, fifo):
    """The timers a state file holds, as `status` reads them: [] if there is none, None if unreadable."""
    try:
        saved = filetimer._StateFile(state_file, fifo).open_saved()
    except (OSError, ValueError):
        return None
    if saved is None:
        return []
    with saved:
        return filetimer._saved_timers(saved)[0]


def write_state(state_file, fifo, lines=()):
    """A state file as a server writes it: the header, then lines (wire requests or records)."""
    header = {"format": "filetimer-state", "version": 2, "fifo": os.path.abspath(fifo), "written": time.time()}
    with open(state_file, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n" + b"".join(lines))
    os.chmod(state_file, 0o600)


def wire(pid, scope, expiration, sig=9, start_time=None):
    return FileTimerRequest(pid, scope, expiration, sig, start_time)._line()


HEALTHY = textwrap.dedent("""
    import random
    filetimer.configure(filetimer.FileTimerClient(path, keep_open=True))
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        try:
            with filetimer.expires(after=0.6):
                time.sleep(random.uniform(0, 0.03))
        except BrokenPipeError:  # no server right now: this step is unguarded
            pass
        time.sleep(random.uniform(0.005, 0.02))
""")


def state(pid):
    """The state letter of a process in /proc (S sleeping, T stopped, Z zombie, ...)."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2 :][:1].decode()


def alive(pid, start_time):
    """Whether the process that had this start time still runs (a zombie does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start_time


def marked(marker):
    """Live processes (not zombies) with ``marker`` in their command line: a test's own descendants."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if marker.encode() not in f.read():
                    continue
        except OSError:
            continue
        start = filetimer._process_start_time(int(entry))
        if start is not None and alive(int(entry), start):
            found[int(entry)] = start
    return found


def kill_marked(marker):
    for _ in range(3):  # a spawner may still be forking
        for pid, start in marked(marker).items():
            if alive(pid, start):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


NOBODY = 65534


class TimeLimitTest(unittest.TestCase):
    """The time limit itself: code under test cannot swallow it, and the cleanups still run."""

    def test_a_test_that_swallows_every_exception_still_ends_at_the_limit_and_is_cleaned_up(self):
        happened = []

        class Swallowing(TimeLimitedTestCase):
            def runTest(self):
                self.addCleanup(happened.append, "cleaned up")
                deadline = time.monotonic() + SLACK
                while time.monotonic() < deadline:  # as code that retries on any error would
                    try:
                        time.sleep(0.01)
                    except Exception:
                        happened.append("swallowed")
                happened.append("ran to the end")

        previous = signal.getsignal(signal.SIGALRM)
        result = unittest.TestResult()
        with mock.patch.object(sys.modules[__name__], "TIME_LIMIT", 0.2):
            Swallowing().run(result)
        self.assertEqual(happened, ["cleaned up"])
        self.assertEqual(len(result.errors), 1, result.errors)
        self.assertIn("TimeLimitExceeded", result.errors[0][1])
        self.assertEqual((signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)), (previous, (0, 0)))


class WireFormatTest(TimeLimitedTestCase):
    """A request is one JSON line of at most PIPE_BUF bytes in torch's format; anything else is refused."""

    def test_json_round_trip_and_value_equality(self):
        request = FileTimerRequest(1234, "train.py#42", 1795000000.5, 9)
        line = request.to_json()
        self.assertEqual(
            json.loads(line),
            {"version": 1, "pid": 1234, "scope_id": "train.py#42", "expiration_time": 1795000000.5, "signal": 9},
        )
        self.assertEqual(FileTimerRequest.from_json(line), request)
        self.assertEqual(FileTimerRequest.from_json(line + "\n"), request)
        self.assertEqual(request.worker_id, 1234)
        self.assertNotEqual(request, FileTimerRequest(1234, "train.py#42", 1795000000.5, 15))
        self.assertEqual(FileTimerRequest.from_json(FileTimerRequest(7, 'é"\\', -1).to_json()).scope_id, 'é"\\')

    def test_extra_keys_are_ignored(self):
        line = '{"version": 1, "pid": 99, "scope_id": "s", "expiration_time": 5, "signal": 0, "future": [1]}'
        self.assertIs(type(FileTimerRequest.from_json(line).expiration_time), float)  # as torch's -1 is read too
        self.assertEqual(FileTimerRequest.from_json(line), FileTimerRequest(99, "s", 5, 0))

    def test_from_json_refuses_malformed_lines(self):
        # 2000 levels fit in PIPE_BUF and exhaust the recursion limit of CPython 3.8 to 3.12 (not 3.13's).
        for line in ["", "[]", "{", '{"pid": 5}', b"\xff\xfe", "{" * 3000 + "}" * 3000, "[" * 2000 + "]" * 2000]:
            with self.subTest(line=line[:20]):
                self.assertRaises(ValueError, FileTimerRequest.from_json, line)

    def test_a_line_is_at_most_pipe_buf_bytes_with_its_newline(self):
        # Only a write of at most PIPE_BUF bytes is atomic; the client sends lines up to that, newline included.
        def padded(total):  # a valid line of `total` bytes with its newline
            length = len(FileTimerRequest(1234, "", 1795000000.5, 9).to_json()) + 1
            return FileTimerRequest(1234, "x" * (total - length), 1795000000.5, 9).to_json()

        longest = padded(filetimer.PIPE_BUF)
        self.assertEqual(len(longest + "\n"), filetimer.PIPE_BUF)
        for text in (longest, longest + "\n", longest.encode() + b"\n"):
            self.assertEqual(FileTimerRequest.from_json(text).worker_pid, 1234)
        too_long = padded(filetimer.PIPE_BUF + 1)
        for text in (too_long, too_long + "\n", too_long.encode(), too_long.encode() + b"\n"):
            with self.subTest(text=text[-10:]), self.assertRaises(ValueError) as caught:
                FileTimerRequest.from_json(text)
            self.assertIn("PIPE_BUF", str(caught.exception))

    def test_to_json_refuses_a_non_finite_time(self):
        self.assertRaises(ValueError, FileTimerRequest(5, "s", float("nan")).to_json)


class DefaultPathTest(FiletimerTestCase):
    """Client, server and CLI meet on one default path, in a directory only the user may use."""

    def test_default_path_follows_the_environment(self):
        cleared = {"XDG_RUNTIME_DIR": "", "FILETIMER_PATH": "", "TORCHELASTIC_TIMER_FILE": ""}
        with mock.patch.dict(os.environ, cleared):
            self.assertEqual(
                filetimer._resolve_path(None),
                os.path.join(tempfile.gettempdir(), "filetimer-%d" % os.geteuid(), "filetimer.fifo"),
            )
            os.environ["XDG_RUNTIME_DIR"] = self.dir
            self.assertEqual(filetimer._resolve_path(None), os.path.join(self.dir, "filetimer.fifo"))
            os.environ["TORCHELASTIC_TIMER_FILE"] = "/torch/path"
            self.assertEqual(filetimer._resolve_path(None), "/torch/path")
            os.environ["FILETIMER_PATH"] = "/our/path"
            self.assertEqual(filetimer._resolve_path(None), "/our/path")
            self.assertEqual(filetimer._resolve_path("/given"), "/given")

    def test_client_and_server_meet_on_the_default_path(self):
        environment = {"XDG_RUNTIME_DIR": self.dir, "FILETIMER_PATH": "", "TORCHELASTIC_TIMER_FILE": ""}
        with mock.patch.dict(os.environ, environment):
            server = self.serve(file_path=None)
            self.assertEqual(server.file_path, os.path.join(self.dir, "filetimer.fifo"))
            with FileTimerClient() as client:
                client.release("nothing")
            self.assertTrue(wait_for(lambda: server.request_count == 1))

    def test_the_default_path_is_in_a_private_directory(self):
        environment = {"XDG_RUNTIME_DIR": "", "FILETIMER_PATH": "", "TORCHELASTIC_TIMER_FILE": ""}
        with mock.patch.dict(os.environ, environment), mock.patch.object(tempfile, "tempdir", self.dir):
            private = os.path.join(self.dir, "filetimer-%d" % os.geteuid())
            self.assertEqual(filetimer._resolve_path(None), os.path.join(private, "filetimer.fifo"))
            server = self.serve(file_path=None)
            self.assertEqual(server.file_path, os.path.join(private, "filetimer.fifo"))
            self.assertEqual(os.stat(private).st_mode & 0o777, 0o700)
            with FileTimerClient() as client:
                client.release("x")
            self.assertTrue(wait_for(lambda: server.request_count == 1))
            server.stop()
            for mode in (0o755, 0o770, 0o703):
                with self.subTest(mode=oct(mode)):
                    os.chmod(private, mode)
                    with self.assertRaises(PermissionError) as caught:
                        FileTimerServer(None)
                    self.assertIn(private, str(caught.exception))
            os.chmod(private, 0o700)
            if os.geteuid() == 0:
                os.chown(private, NOBODY, -1)
                self.assertRaises(PermissionError, FileTimerServer, None)

    def test_serve_on_the_default_path_works_on_first_use(self):
        # No XDG_RUNTIME_DIR and a temporary directory where filetimer never ran: serve makes its private
        # directory before it looks at the state file beside the FIFO.
        environment = dict(ENV, XDG_RUNTIME_DIR="", FILETIMER_PATH="", TORCHELASTIC_TIMER_FILE="", TMPDIR=self.dir)
        fifo = os.path.join(self.dir, "filetimer-%d" % os.geteuid(), "filetimer.fifo")
        server = self.spawn([*PYTHON, "-m", "filetimer", "serve"], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        self.assertIn("serving " + fifo, server.stdout.readline())
        status = cli("status", env=environment)
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        server.terminate()
        self.assertEqual(server.wait(SLACK), 0)
        self.assertEqual(os.listdir(os.path.dirname(fifo)), ["filetimer.fifo.state"])


class HungWorkerIsKilledTest(FiletimerTestCase):
    """A worker that does not release its timer in time is killed, within a second of the deadline."""

    def test_hung_worker_is_killed_and_events_are_reported(self):
        server = self.serve(max_interval=10, dump_grace=filetimer._DUMP_GRACE)
        worker = self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n")
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        self.assertEqual(self.event_names(worker.pid), ["timer expired", "dump worker stacks", "kill worker process"])
        self.assertIn("most recent call first", self.read_log(worker))  # the dump, on the worker's stderr
        self.assertEqual(server.timers(), [])
        server.stop()
        self.assertEqual(self.event_names()[0], "watchdog started")
        self.assertEqual(self.event_names()[-1], "watchdog stopped")

    def test_a_hung_worker_is_killed_within_a_second_of_its_deadline(self):
        # At max_interval 10 neither the deadline nor the kill after the stack dump may wait for the heartbeat.
        self.serve(max_interval=10, dump_grace=filetimer._DUMP_GRACE)
        worker = self.spawn_worker("with filetimer.expires(after=0.2) as timer:\n    print(repr(timer.deadline), "
                                   "flush=True)\n    time.sleep(60)\n", stdout=subprocess.PIPE, text=True)
        deadline = float(worker.stdout.readline())
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertLessEqual(time.time() - deadline, 1.0)
        self.assertIn("dump worker stacks", self.event_names(worker.pid))

    def test_a_short_timer_behind_a_long_one_fires_after_the_heap_is_compacted(self):
        # 1,100 acquire/release pairs leave the heap mostly stale entries, and it is rebuilt from the live timers.
        server = self.serve()
        sleeper = self.spawn_sleeper()
        now = time.time()
        churn = [FileTimerRequest(sleeper.pid, "churn", now + 600 if i % 2 == 0 else -1, 9) for i in range(2200)]
        server.register_timers([FileTimerRequest(sleeper.pid, "long", now + 600, 9),
                                FileTimerRequest(sleeper.pid, "short", now + 0.3, 9), *churn])
        self.assertLess(len(server._timers.heap), 100)  # compacted
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)

    def test_expires_as_a_decorator(self):
        server = self.serve()
        worker = self.spawn_worker(
            "@filetimer.expires(after=0.2)\ndef step(s):\n    time.sleep(s)\n"
            "step(0.01)\nprint('returned', flush=True)\nsys.stdin.read()\nstep(60)\n",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.assertEqual(worker.stdout.readline(), "returned\n")
        self.assertTrue(wait_for(lambda: server.request_count == 2))  # the quick call armed and released a timer
        self.assertEqual(server.timers(), [])
        worker.stdin.close()  # on to the call that hangs
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)

    def test_re_acquiring_an_active_scope_replaces_its_deadline(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        with FileTimerClient(self.path) as client:
            def acquire(after):
                expiration = time.time() + after
                client._send_line(FileTimerRequest(sleeper.pid, "same", expiration, signal.SIGKILL)._line())
                return expiration

            expirations = []
            for after in (0.3, 100, 50):  # armed, then later, then earlier: never released in between
                expirations.append(acquire(after))
                self.assertTrue(wait_for(lambda: [t.expiration_time for t in server.timers()] == expirations[-1:]))
            time.sleep(max(0.0, expirations[0] + 0.15 - time.time()))
            self.assertIsNone(sleeper.poll())  # the first deadline went with the timer it armed
            acquire(0.1)
            self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)  # and a short deadline replaces a long one

    def test_earliest_signalled_timer_decides_and_all_are_dropped(self):
        server = self.serve()
        worker = self.spawn_lingering_worker("signal.signal(signal.SIGTERM, lambda *_: print('TERM', flush=True))\n")
        self.assertEqual(worker.stdout.readline(), "done\n")  # survives SIGTERM from here on
        now = time.time()
        server.register_timers([
            FileTimerRequest(worker.pid, "a", now + 0.1, 0),
            FileTimerRequest(worker.pid, "b", now + 0.1, signal.SIGTERM),
            FileTimerRequest(worker.pid, "c", now + 0.4, signal.SIGKILL),
        ])
        self.assertEqual(worker.stdout.readline(), "TERM\n")
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        self.assertEqual(server.timers(), [])  # c too: reaping drops all the worker's timers
        time.sleep(max(0.0, now + 0.6 - time.time()))  # past c's deadline
        self.assertIsNone(worker.poll())
        self.assertEqual(self.event_names(worker.pid), ["timer expired", "timer expired", "kill worker process"])
        worker.stdin.close()
        self.assertEqual((worker.stdout.read(), worker.wait(SLACK)), ("", 0))  # signalled once only

    def test_expired_signal_zero_timer_is_reported_once(self):
        server = self.serve(max_interval=0.02)
        sleeper = self.spawn_sleeper()
        server.register_timers([FileTimerRequest(sleeper.pid, "quiet", time.time() + 0.05, 0)])
        self.assertTrue(wait_for(lambda: "timer expired" in self.event_names()))
        time.sleep(0.15)  # many heartbeats
        self.assertEqual(self.event_names(sleeper.pid), ["timer expired"])
        self.assertIsNone(sleeper.poll())
        self.assertEqual(server.timers(), [])


class HealthyWorkerIsSparedTest(FiletimerTestCase):
    """A worker that releases in time, or exits first, is never signalled."""

    def test_worker_that_finishes_in_time_is_not_killed(self):
        # The worker lives on after releasing: its exit, which drops its timers too, must not hide a lost release.
        server = self.serve()
        worker = self.spawn_lingering_worker("with filetimer.expires(after=0.3):\n    time.sleep(0.02)\n")
        self.assertEqual(worker.stdout.readline(), "done\n")
        self.assertTrue(wait_for(lambda: server.request_count == 2))
        self.assertEqual(server.timers(), [])
        time.sleep(0.4)  # past the deadline
        self.assertIsNone(worker.poll())
        worker.stdin.close()
        self.assertEqual(worker.wait(SLACK), 0)
        self.assertNotIn("kill worker process", self.event_names())

    def test_recursive_expires_re_acquires_the_scope(self):
        # Entering the inner level re-arms the scope (torch's semantics): the inner level ends past the
        # outer level's first deadline, and the worker survives only because of that re-arm.
        server = self.serve()
        worker = self.spawn_worker(
            "def f(n):\n    with filetimer.expires(after=0.4):\n        time.sleep(0.25)\n        if n:\n"
            "            f(n - 1)\nf(1)\n"
        )
        self.assertEqual(worker.wait(SLACK), 0)
        # acquire, re-arm on entry, re-arm on the inner exit, release (the last may still be in the pipe)
        self.assertTrue(wait_for(lambda: server.request_count == 4), server.request_count)

    def test_worker_that_exits_before_releasing_is_forgotten_unsignalled(self):
        sent = []
        with mock.patch("os.kill", lambda pid, sig: sent.append(pid)), \
                mock.patch.object(signal, "pidfd_send_signal", lambda fd, sig: sent.append(fd), create=True):
            server = self.serve(max_interval=0.1)
            worker = self.spawn_worker("filetimer._configured_client.acquire('s', time.time() + 0.3)\nos._exit(0)\n")
            self.assertEqual(worker.wait(SLACK), 0)
            self.assertTrue(wait_for(lambda: server.request_count == 1))
            self.assertTrue(wait_for(lambda: server.timers() == []))
            time.sleep(0.4)  # past the deadline
        self.assertEqual(sent, [])
        self.assertEqual(self.event_names(worker.pid), [])

    def test_requests_from_ten_processes_are_all_counted(self):
        server = self.serve()
        code = (
            "client = filetimer._configured_client\n"
            "for i in range(200):\n    client.acquire('s%d' % i, time.time() + 60)\n    client.release('s%d' % i)\n"
        )
        workers = [self.spawn_lingering_worker(code) for _ in range(10)]
        self.assertEqual([w.stdout.readline() for w in workers], ["done\n"] * 10)
        self.assertTrue(wait_for(lambda: server.request_count == 10 * 400))
        self.assertEqual((server.rejected_count, server.timers()), (0, []))  # released, though all still run
        self.assertEqual([w.poll() for w in workers], [None] * 10)
        for w in workers:
            w.stdin.close()
        self.assertEqual([w.wait(SLACK) for w in workers], [0] * 10)


class ClockStepTest(FiletimerTestCase):
    """Safety rule: deadlines are on the monotonic clock from arrival; wall-clock steps change nothing."""

    def test_wall_clock_steps_neither_kill_early_nor_spare(self):
        steps = (3600, -3600)  # side by side: a server for each, on a FIFO of its own
        paths = [os.path.join(self.dir, "%d.fifo" % i) for i in range(len(steps))]
        commands = [self.spawn_server(path)[1] for path in paths]
        sleepers = [self.spawn_sleeper() for _ in steps]
        for path, sleeper in zip(paths, sleepers):
            with FileTimerClient(path) as client:
                client._send_line(FileTimerRequest(sleeper.pid, "s", time.time() + 0.6, signal.SIGKILL)._line())
        for step, command in zip(steps, commands):
            self.assertTrue(wait_for(lambda command=command: command()[2] == 1))
            command("shift %d" % step)
        time.sleep(0.2)
        for step, sleeper in zip(steps, sleepers):
            with self.subTest(step=step):
                self.assertIsNone(sleeper.poll())  # not early
        for step, sleeper in zip(steps, sleepers):
            with self.subTest(step=step):
                self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)  # not spared


class WatchdogKeepsGoingTest(FiletimerTestCase):
    """No fault in a pass, a callback or one reap stops the watchdog from killing the next hung worker."""

    def test_a_pass_that_raises_is_logged_and_the_watchdog_carries_on(self):
        passes = []

        class FailingOnce(FileTimerServer):
            def _run_pass(self, ready):
                passes.append(ready)
                if len(passes) == 1:
                    raise RuntimeError("a bug in one pass")
                super()._run_pass(ready)

        server = FailingOnce(self.path, log_event=self.record, dump_grace=0)
        self.addCleanup(server.stop)
        self.servers.append(server)
        with self.assertLogs("filetimer", "ERROR") as logs:
            server.start()
            worker = self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n")
            self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)  # by a pass after the one that raised
        self.assertIn("watchdog pass failed", "\n".join(logs.output))
        self.assertIn("a bug in one pass", "\n".join(logs.output))
        self.assertGreater(len(passes), 1)

    def test_a_failing_log_event_callback_does_not_stop_the_watchdog(self):
        def explode(name, request):
            if request is not None:
                raise RuntimeError("callback bug")

        server = self.serve(log_event=explode)
        with self.assertLogs("filetimer", "ERROR"):
            for count in (1, 2):  # and the next hung worker is killed too
                worker = self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n")
                self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
                self.assertTrue(wait_for(lambda count=count: server.timers() == [] and server.request_count == count))
            time.sleep(0.05)

    def test_a_reap_that_raises_does_not_cost_the_other_reaps_of_the_pass(self):
        class Failing(FileTimerServer):
            def _reap_worker(self, worker_pid, signal):
                if worker_pid == first.pid:
                    raise OSError("a subclass's hook failed")
                return super()._reap_worker(worker_pid, signal)

        first, second = self.spawn_sleeper(), self.spawn_sleeper()
        server = Failing(self.path, dump_grace=0)
        self.addCleanup(server.stop)
        server.start()
        deadline = time.time() + 0.1
        with self.assertLogs("filetimer", "ERROR"):
            server.register_timers([FileTimerRequest(first.pid, "s", deadline, 9),
                                    FileTimerRequest(second.pid, "s", deadline, 9)])
            self.assertEqual(second.wait(SLACK), -signal.SIGKILL)


class LifecycleTest(FiletimerTestCase):
    """start, stop and run_once are prompt and leave no thread or FIFO behind."""

    def watchdog_threads(self):
        return [t for t in threading.enumerate() if t.name == "filetimer-watchdog"]

    def test_stop_is_prompt_with_no_client_and_leaves_no_thread(self):
        server = FileTimerServer(self.path, max_interval=10)
        self.addCleanup(server.stop)
        server.start()
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, 5)  # far below max_interval
        self.assertEqual(self.watchdog_threads(), [])
        self.assertFalse(os.path.exists(self.path))

    def test_stop_without_start_and_twice(self):
        server = FileTimerServer(self.path)
        self.addCleanup(server.stop)
        self.assertTrue(os.path.exists(self.path))
        server.stop()
        server.stop()
        self.assertFalse(os.path.exists(self.path))
        self.assertRaises(RuntimeError, server.start)

    def test_context_manager_starts_and_stops(self):
        with FileTimerServer(self.path, log_event=self.record) as server:
            self.assertEqual(len(self.watchdog_threads()), 1)
            with FileTimerClient(self.path) as client:
                client.release("x")
            self.assertTrue(wait_for(lambda: server.request_count == 1))
        self.assertEqual(self.watchdog_threads(), [])
        self.assertEqual(self.event_names(), ["watchdog started", "watchdog stopped"])

    def test_stop_from_log_event_returns_and_leaks_nothing_even_during_a_rewrite(self):
        # The callback runs on the watchdog thread, inside its pass: a rewrite of the state file under way waits
        # for the lock that pass holds, so stop() must not wait for it; nor may the pass hold descriptors after.
        hung = self.spawn_sleeper()
        rewriting, real_rewrite = threading.Event(), filetimer._StateFile.rewrite

        def slow_rewrite(state, *args):
            rewriting.set()
            time.sleep(0.3)  # the kill, and the callback's stop(), come meanwhile
            return real_rewrite(state, *args)

        def stop_on_kill(name, request):
            if name == "kill worker process":
                server.stop()
                stopped.set()

        stopped, fds = threading.Event(), len(os.listdir("/proc/self/fd"))
        state = os.path.join(self.dir, "timers.state")
        server = FileTimerServer(self.path, state_file=state, log_event=stop_on_kill, dump_grace=0)
        self.addCleanup(threading.Thread(target=server.stop, daemon=True).start)  # a deadlocked stop() hangs no run
        with mock.patch.object(filetimer._StateFile, "rewrite", slow_rewrite), \
                mock.patch.object(filetimer._StateFile, "outgrown", True):
            server.start()
            server._journal.compact_due.set()
            self.assertTrue(rewriting.wait(SLACK))
            server.register_timers([FileTimerRequest(hung.pid, "hung", time.time() + 0.05, 9)])
            self.assertEqual(hung.wait(SLACK), -signal.SIGKILL)
            self.assertTrue(stopped.wait(3))  # 10x the rewrite's sleep
            self.assertTrue(wait_for(lambda: [t for t in threading.enumerate() if t.name.startswith("filetimer")]
                                     == []))
        self.assertEqual(len(os.listdir("/proc/self/fd")), fds)

    def test_stop_waits_for_a_rewrite_under_way(self):
        # Only stop() from the watchdog's own pass (a log_event callback) drops it; a rewrite may hold what a
        # failed append could not write.
        rewriting, real_rewrite = threading.Event(), filetimer._StateFile.rewrite

        def slow_rewrite(state, *args):
            rewriting.set()
            time.sleep(0.2)
            return real_rewrite(state, *args)

        state = os.path.join(self.dir, "timers.state")
        server = FileTimerServer(self.path, state_file=state)
        self.addCleanup(server.stop)
        with mock.patch.object(filetimer._StateFile, "rewrite", slow_rewrite), \
                mock.patch.object(filetimer._StateFile, "outgrown", True):
            server.start()
            inode = os.stat(state).st_ino
            server._journal.compact_due.set()
            self.assertTrue(rewriting.wait(SLACK))
            server.stop()
        self.assertNotEqual(os.stat(state).st_ino, inode)  # the rewrite was renamed over it

    def test_run_once_processes_pending_requests_then_stops(self):
        server = FileTimerServer(self.path, log_event=self.record)
        self.addCleanup(server.stop)
        sleeper = self.spawn_sleeper()
        with FileTimerClient(self.path) as client:  # a client may write before start()
            client._send_line(FileTimerRequest(sleeper.pid, "late", time.time() - 1, signal.SIGTERM)._line())
        server.run_once()
        self.assertEqual(server.request_count, 1)
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGTERM)
        self.assertFalse(os.path.exists(self.path))


class TorchApiTest(FiletimerTestCase):
    """torch's server API and extension points work as in torch (no torch needed)."""

    def test_get_expired_timers_and_clear_timers(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        now = time.time()
        early, late = FileTimerRequest(sleeper.pid, "a", now + 30, 9), FileTimerRequest(sleeper.pid, "b", now + 60, 9)
        server.register_timers([early, late])
        self.assertEqual(server.get_expired_timers(now + 45), {sleeper.pid: [early]})
        self.assertEqual(server.get_expired_timers(now), {})
        server.clear_timers([sleeper.pid])
        self.assertEqual(server.timers(), [])
        self.assertTrue(FileTimerServer.is_process_running(sleeper.pid))
        self.assertFalse(FileTimerServer.is_process_running(0))
        self.assertFalse(FileTimerServer.is_process_running(-1))

    def test_heartbeat_advances_the_progress_time(self):
        server = self.serve(max_interval=0.05)
        before = server.get_last_progress_time()
        self.assertTrue(wait_for(lambda: server.get_last_progress_time() > before, timeout=3))

    def test_every_reap_goes_through_reap_worker_which_a_subclass_may_override(self):
        calls = []

        class Recording(FileTimerServer):
            def _reap_worker(self, worker_pid, signal):  # as torch's subclasses do
                calls.append((worker_pid, signal))
                return super()._reap_worker(worker_pid, signal) if signal == 9 else True

        server = Recording(self.path, log_event=self.record, dump_grace=0)
        self.addCleanup(server.stop)
        self.servers.append(server)
        server.start()
        killed, spared = self.spawn_sleeper(), self.spawn_sleeper()
        server.register_timers([FileTimerRequest(killed.pid, "s", time.time() + 0.2, 9),
                                FileTimerRequest(spared.pid, "s", time.time() + 0.2, 15)])
        self.assertEqual(server._request_count, 2)
        self.assertEqual(killed.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: len(self.event_names()) == 5))
        self.assertEqual(sorted(calls), sorted([(killed.pid, 9), (spared.pid, 15)]))
        self.assertEqual(self.event_names(spared.pid), ["timer expired", "kill worker process"])  # counted
        self.assertIsNone(spared.poll())  # the subclass chose not to signal it


class ClientTest(FiletimerTestCase):
    """A client never loses or half-writes a request, and says clearly when no server reads."""

    def test_no_server_raises_broken_pipe(self):
        # An acquire tries to open the FIFO for connect_timeout (1 s): ten tries, nine 0.1 s sleeps (recorded
        # here, not slept); a release does not wait: it is kept, for the background delivery (held back here).
        with mock.patch.object(filetimer.time, "sleep") as slept, \
                mock.patch.object(FileTimerClient, "_deliver_kept", lambda client: None):
            with FileTimerClient(self.path) as client:
                self.assertRaises(BrokenPipeError, client.acquire, "s", time.time() + 1)
            os.mkfifo(self.path)  # a FIFO nobody reads
            for keep_open in (None, False, True):
                with FileTimerClient(self.path, keep_open=keep_open) as client:
                    with self.assertRaises(BrokenPipeError) as caught:
                        client.acquire("s", time.time() + 1)
                    client.release("s")
                    self.assertEqual(list(client._kept), ["s"])
            with FileTimerClient(self.path, connect_timeout=0) as client:  # one try, no sleep
                self.assertRaises(BrokenPipeError, client.acquire, "s", time.time() + 1)
        self.assertEqual(slept.call_args_list, [mock.call(0.1)] * 9 * 4)
        error = caught.exception  # one clear line: EPIPE, the path, no chained error, no server named
        self.assertEqual((error.errno, str(error)), (errno.EPIPE, "[Errno 32] no server is reading %s" % self.path))
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__suppress_context__)

    def test_request_over_pipe_buf_is_refused_before_writing(self):
        server = self.serve()
        with FileTimerClient(self.path) as client:
            self.assertRaises(ValueError, client.acquire, "x" * filetimer.PIPE_BUF, time.time() + 60)
            client.release("fits")
        self.assertTrue(wait_for(lambda: server.request_count == 1))
        self.assertEqual(server.rejected_count, 0)

    def test_the_fifo_is_held_open_for_a_filetimer_server_only(self):
        server = self.serve()
        with FileTimerClient(self.path) as default, FileTimerClient(self.path, keep_open=False) as closing:
            default.release("a")
            closing.release("b")
            self.assertIsNotNone(default._fd)  # a filetimer server: held
            self.assertIsNone(closing._fd)
        self.assertTrue(wait_for(lambda: server.request_count == 2))
        # A server that holds no lock on its end, as torch's: each request is written and closed, and the
        # server reaches end-of-file after it (torch's looks at its deadlines only there).
        other = os.path.join(self.dir, "torch.fifo")
        os.mkfifo(other, 0o600)
        reader = self.spawn([*PYTHON, "-c", "import sys\nwith open(sys.argv[1]) as f:\n    print(f.readline().strip(),"
                             " flush=True)\n    print(repr(f.readline()), flush=True)\n", other],
                            stdout=subprocess.PIPE, text=True)
        with FileTimerClient(other) as default:
            default.acquire("c", time.time() + 600)  # retried until the reader has opened its end
            self.assertIsNone(default._fd)
            self.assertIn('"scope_id": "c"', reader.stdout.readline())
            self.assertEqual(reader.stdout.readline().strip(), "''")  # end-of-file

    def test_expires_without_a_client_raises(self):
        guard = filetimer.expires(after=1)
        with mock.patch.object(filetimer, "_configured_client", None), self.assertRaises(RuntimeError), guard:
            pass

    def test_expires_with_no_server_raises_broken_pipe_and_runs_nothing_unguarded(self):
        ran = []
        # The client's retries are not slept.
        with mock.patch.object(filetimer.time, "sleep"), FileTimerClient(self.path) as client, \
                self.assertRaises(BrokenPipeError), filetimer.expires(after=30, client=client):
            ran.append("the guarded block")
        self.assertEqual(ran, [])
        self.assertEqual([scope for scope in filetimer._nesting.innermost if scope.startswith(__file__)], [])

    def test_default_scope_is_the_callers_file_and_line(self):
        guard = filetimer.expires(after=1)
        line = sys._getframe().f_lineno - 1
        self.assertEqual(guard._scope, "%s#%d" % (__file__, line))

    def test_a_keep_open_client_can_send_from_a_signal_handler(self):
        server = self.serve()
        worker = self.spawn_worker(
            "client = filetimer.FileTimerClient(path, keep_open=True)\n"
            "sent = []\n"
            "def tick(*_):  # may itself be interrupted by the next tick: append, not +=\n"
            "    client.release('from the handler')\n    sent.append(1)\n"
            "signal.signal(signal.SIGALRM, tick)\n"
            "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\n"
            "end = time.monotonic() + 0.3\n"
            "pairs = 0\n"
            "while time.monotonic() < end:\n"
            "    client.acquire('main', time.time() + 60)\n    client.release('main')\n    pairs += 1\n"
            "signal.setitimer(signal.ITIMER_REAL, 0)\n"
            "print(2 * pairs + len(sent), len(os.listdir('/proc/self/fd')), flush=True)\n",
            stdout=subprocess.PIPE, text=True)
        out, _ = worker.communicate(timeout=SLACK)
        self.assertEqual(worker.returncode, 0, self.read_log(worker))
        sent, fds = map(int, out.split())
        self.assertTrue(wait_for(lambda: server.request_count == sent))
        self.assertLess(fds, 20)  # no handle left open by a handler's send

    def test_writer_waits_for_a_frozen_server_and_loses_nothing(self):
        # 10,000 requests of ~110 bytes: far more than the 64 KiB a pipe holds by default.
        server, command = self.spawn_server()
        writer = self.spawn_worker(
            "client = filetimer._configured_client\n"
            "for i in range(5000):\n    client.acquire('s%d' % (i % 10), time.time() + 600)\n"
            "    client.release('s%d' % (i % 10))\n"
        )
        server.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.5)
            self.assertIsNone(writer.poll())  # blocked on the full pipe, not failed
        finally:
            server.send_signal(signal.SIGCONT)
        self.assertEqual(writer.wait(SLACK * 3), 0)
        self.assertTrue(wait_for(lambda: command() == [10000, 0, 0]))

    def test_client_times_out_on_a_server_that_stays_away_without_half_lines(self):
        server, command = self.spawn_server()
        server.send_signal(signal.SIGSTOP)
        sent = 0
        try:
            with FileTimerClient(self.path, timeout=0.3) as client, self.assertRaises(TimeoutError):
                for _ in range(100000):
                    client.release("scope-%d" % sent)
                    sent += 1
        finally:
            server.send_signal(signal.SIGCONT)
        self.assertGreater(sent, 0)
        self.assertTrue(wait_for(lambda: command() == [sent, 0, 0]))


class BadInputTest(FiletimerTestCase):
    """Safety rule: a bad line is counted and logged, and harms no other line."""

    BAD_LINES = (
        b"not json",
        b"[1, 2, 3]",
        b'{"version": 1, "pid": 4242, "scope_id": "no signal", "expiration_time": 1}',
        line(True, "bool pid", 1),
        line(4242.0, "float pid", 1),
        line(10**30, "huge pid", 1),
        line(0, "pid zero", 1),
        line(1, "pid one", 1),
        line(-1, "pid minus one", 1),
        line(4242, 42, 1),
        line(4242, "nan", float("nan")),
        line(4242, "inf", float("inf")),
        line(4242, "string time", "soon"),
        line(4242, "huge int time", 10**400),
        line(4242, "signal 65", 1, 65),
        line(4242, "signal -1", 1, -1),
        line(4242, "bool signal", 1, True),
        line(4242, "version 2", 1, version=2),
        line(4242, "bad start", 1, start_time="x"),
        line(4242, "bad dump signal", 1, dump_signal="x"),
        line(4242, "dump signal 65", 1, dump_signal=65),
        b'{"version": 1, "pid": 4242, "scope_id": "\xff\xfe", "expiration_time": 1, "signal": 9}',
        b"[" * 2000 + b"]" * 2000,
        b'{"version": 1, "pid": 4242, "scope_id": "' + b"x" * 5000 + b'", "expiration_time": 1, "signal": 9}',
    )

    def test_valid_requests_around_every_kind_of_bad_line_are_applied(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        far = time.time() + 600
        data = b""
        for i, bad in enumerate(self.BAD_LINES):
            data += line(sleeper.pid, "valid %d" % i, far) + bad.rstrip(b"\n") + b"\n"
        data += line(sleeper.pid, "valid last", far)
        with self.assertLogs("filetimer", "WARNING"):
            write_raw(self.path, data)
            self.assertTrue(wait_for(lambda: server.rejected_count == len(self.BAD_LINES)))
        self.assertTrue(wait_for(lambda: server.request_count == len(self.BAD_LINES) + 1))
        self.assertEqual(len(server.timers()), len(self.BAD_LINES) + 1)
        with FileTimerClient(self.path) as client:  # and the server keeps serving
            client.release("afterwards")
        self.assertTrue(wait_for(lambda: server.request_count == len(self.BAD_LINES) + 2))

    def test_a_fragment_left_by_a_writer_costs_only_itself(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        far = time.time() + 600
        # A writer that died mid-line (or a hostile one) leaves no newline: the next writer's line follows it.
        for i, fragment in enumerate((b"{", b'{"version": 1, "pi', b"x" * 5000, b'{"version"' * 600)):
            write_raw(self.path, fragment)
            write_raw(self.path, line(sleeper.pid, "next %d" % i, far))
            self.assertTrue(wait_for(lambda i=i: server.request_count == i + 1))
        self.assertEqual(sorted(t.scope_id for t in server.timers()), ["next %d" % i for i in range(4)])
        self.assertEqual(server.rejected_count, 4)

    def test_a_bad_dump_signal_is_rejected_and_a_worker_expiring_in_the_same_pass_is_still_killed(self):
        # Were "dump_signal": "x" accepted, asking its worker for a dump would raise in the middle of the reap pass,
        # after the pass had taken both expired timers off the heap: the valid worker's kill would go with it.
        server = self.serve(dump_grace=filetimer._DUMP_GRACE)
        bad, hung = self.spawn_sleeper(), self.spawn_sleeper()
        past = time.time() - 1
        with self.assertLogs("filetimer", "WARNING"):
            write_raw(self.path, line(bad.pid, "s", past, dump_signal="x") + line(hung.pid, "s", past))
            self.assertTrue(wait_for(lambda: server.request_count + server.rejected_count == 2))
            self.assertEqual(server.rejected_count, 1)
            self.assertEqual(hung.wait(SLACK), -signal.SIGKILL)
        self.assertIsNone(bad.poll())

    def test_line_longer_than_a_read_is_rejected_once(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        with self.assertLogs("filetimer", "WARNING"):
            write_raw(self.path, b"y" * 300000 + b"\n" + line(sleeper.pid, "after", time.time() + 600))
            self.assertTrue(wait_for(lambda: server.request_count == 1))
        self.assertEqual(server.rejected_count, 1)
        self.assertEqual([t.scope_id for t in server.timers()], ["after"])

    def test_a_flood_of_garbage_is_counted_but_logged_a_bounded_number_of_times(self):
        server = self.serve()
        with self.assertLogs("filetimer", "WARNING") as logs:
            write_raw(self.path, b"garbage\n" * 30000)  # over a thousand times the bound below
            self.assertTrue(wait_for(lambda: server.rejected_count == 30000))
        self.assertLessEqual(len(logs.records), 2 * filetimer._LOGS_PER_MINUTE + 2)

    def test_a_log_limit_says_how_many_records_it_left_out_once_its_minute_is_over(self):
        limit, now = filetimer._LogLimit("rejected lines"), [1000.0]
        with mock.patch.object(filetimer.time, "monotonic", lambda: now[0]):
            allowed = [limit.allow() for _ in range(25)]
            now[0] += 61
            with self.assertLogs("filetimer", "WARNING") as logs:
                self.assertTrue(limit.allow())
        self.assertEqual(allowed, [True] * filetimer._LOGS_PER_MINUTE + [False] * (25 - filetimer._LOGS_PER_MINUTE))
        self.assertEqual(logs.output, ["WARNING:filetimer:%d more rejected lines were not logged"
                                       % (25 - filetimer._LOGS_PER_MINUTE)])


class HostileLoadTest(FiletimerTestCase):
    """No load delays a kill for long, no writer grows the server without bound, no flood fills its log."""

    def test_a_flood_of_tiny_lines_from_two_writers_does_not_delay_a_kill(self):
        server = self.serve()
        floods = [self.spawn([*PYTHON, "-c", FLOOD, self.path, "3"]) for _ in range(2)]
        self.assertTrue(wait_for(lambda: server.rejected_count > 10000))  # the flood is on
        sleeper = self.spawn_sleeper()
        deadline = time.time() + 0.3
        server.register_timers([FileTimerRequest(sleeper.pid, "hung", deadline, 9)])
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)
        self.assertLess(time.time() - deadline, 1.0)  # the target is 50 ms; under the old byte cap it took seconds
        self.assertTrue(all(flood.poll() is None for flood in floods))

    def test_report_only_expiries_do_not_delay_a_kill(self):
        server = self.serve(max_timers_per_pid=200000)
        quiet, hung = self.spawn_sleeper(), self.spawn_sleeper()
        requests = [FileTimerRequest(quiet.pid, "q%d" % i, 0, 0) for i in range(100000)]
        deadline = time.time() + 0.8  # registering them takes about half of it
        for request in requests:
            request.expiration_time = deadline - 0.05
        server.register_timers(requests)
        server.register_timers([FileTimerRequest(hung.pid, "hung", deadline, 9)])
        armed = time.time()  # on a slow machine, maybe after the deadline
        self.assertEqual(hung.wait(SLACK), -signal.SIGKILL)
        self.assertLess(time.time() - max(deadline, armed), 1.0)  # the target is 50 ms
        # and every report-only one was reported (polled by the events: a snapshot of 100,000 timers costs more)
        self.assertTrue(wait_for(lambda: self.event_names().count("timer expired") == 100001))
        self.assertEqual(server.timers(), [])
        names = self.event_names()
        self.assertLess(names.index("kill worker process"), 50000)  # not behind all of them
        self.assertIsNone(quiet.poll())

    def test_timers_beyond_the_caps_are_refused_and_said_so(self):
        server = self.serve(max_timers_per_pid=3, max_timers=5)
        a, b = self.spawn_sleeper(), self.spawn_sleeper()
        far = time.time() + 600
        with self.assertLogs("filetimer", "WARNING") as logs:
            server.register_timers([FileTimerRequest(a.pid, "a%d" % i, far, 9) for i in range(4)])
            server.register_timers([FileTimerRequest(b.pid, "b%d" % i, far, 9) for i in range(3)])
        self.assertEqual(sorted(t.scope_id for t in server.timers()), ["a0", "a1", "a2", "b0", "b1"])
        self.assertIn("max_timers_per_pid", logs.output[0])
        self.assertIn("max_timers", logs.output[1])
        server.register_timers([FileTimerRequest(a.pid, "a0", far + 1, 9),  # a re-arm is no new timer
                                FileTimerRequest(a.pid, "a1", -1)])  # and a release makes room
        server.register_timers([FileTimerRequest(b.pid, "b2", far, 9)])
        self.assertEqual(sorted(t.scope_id for t in server.timers()), ["a0", "a2", "b0", "b1", "b2"])
        for args in (["--max-timers-per-pid", "0"], ["--max-timers", "x"]):
            result = cli("serve", self.path, *args)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn("%s: expected a whole number > 0, got %r" % tuple(args), result.stderr)

    def test_requests_for_a_process_that_is_gone_are_logged_a_bounded_number_of_times(self):
        server = self.serve()
        gone = self.spawn_sleeper()
        gone.kill()
        gone.wait()
        far = time.time() + 600
        with self.assertLogs("filetimer", "INFO") as logs:
            write_raw(self.path, b"".join(line(gone.pid, "s%d" % i, far) for i in range(20000)))
            self.assertTrue(wait_for(lambda: server.request_count == 20000))
        self.assertLessEqual(len(logs.records), 2 * filetimer._LOGS_PER_MINUTE + 2)


@unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
class FdLimitTest(FiletimerTestCase):
    """At the descriptor limit a process is signalled only when it is identified, and a tree still dies whole."""

    def serve_limited(self, soft, hard):
        server = self.spawn([*PYTHON, "-c", FD_LIMITED, str(soft), str(hard), "-m", "filetimer", "serve", self.path,
                             "--no-state", "--dump-grace", "0"], stdout=subprocess.PIPE, text=True)
        self.assertIn("serving", server.stdout.readline())
        return server

    def test_a_worker_and_its_150_children_die_under_a_limit_of_64_descriptors(self):
        server = self.serve_limited(64, 64)
        worker = self.spawn_worker(
            "import subprocess\n"
            "tree = subprocess.Popen(['sh', '-c', 'for i in $(seq 150); do sleep 60 & echo $!; done; wait'],"
            " stdout=subprocess.PIPE, text=True)\n"
            "for _ in range(150):\n    print(tree.stdout.readline().strip(), flush=True)\n"
            "with filetimer.expires(after=0.3):\n    time.sleep(60)\n", stdout=subprocess.PIPE, text=True)
        pids = [int(worker.stdout.readline()) for _ in range(150)]
        start_times = [filetimer._process_start_time(pid) for pid in pids]
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assert_dead(dict(zip(pids, start_times)))
        self.assertIsNone(server.poll())

    def test_the_server_raises_its_soft_limit_to_the_hard_one(self):
        server = self.serve_limited(64, 512)
        with open("/proc/%d/limits" % server.pid) as f:
            self.assertIn(["512", "512"], [row.split()[3:5] for row in f if row.startswith("Max open files")])

    def test_a_process_that_cannot_be_identified_is_neither_watched_nor_signalled(self):
        # No pidfd, and /proc unreadable (as at the fd limit): the start time cannot be checked.
        unreadable = OSError(errno.EMFILE, "Too many open files")
        with mock.patch.object(filetimer, "_HAVE_PIDFD", False):
            server = self.serve()
            armed, later = self.spawn_sleeper(), self.spawn_sleeper()
            server.register_timers([FileTimerRequest(armed.pid, "s", time.time() + 0.3, 9)])
            self.assertEqual(len(server.timers()), 1)
            with mock.patch.object(filetimer, "_read_proc", side_effect=unreadable), \
                    self.assertLogs("filetimer", "ERROR") as logs:
                server.register_timers([FileTimerRequest(later.pid, "s", time.time() + 0.3, 9)])
                self.assertEqual([t.worker_pid for t in server.timers()], [armed.pid])  # refused
                self.assertTrue(wait_for(lambda: "timer expired" in self.event_names()))
                time.sleep(0.2)
            self.assertIsNone(armed.poll())  # not signalled: it could not be identified
            self.assertIsNone(later.poll())
        text = "\n".join(logs.output)
        self.assertIn("refusing a timer for pid %d: cannot verify which process it is" % later.pid, text)
        self.assertIn("cannot verify that pid %d is still the same process" % armed.pid, text)

    def test_a_tree_that_cannot_be_read_whole_says_how_much_it_missed(self):
        server = self.serve()
        worker = self.spawn_worker("import subprocess\nsubprocess.Popen(['sleep', '60'])\n"
                                   "filetimer._configured_client.acquire('s', time.time() + 0.3)\ntime.sleep(60)\n")
        self.assertTrue(wait_for(lambda: server.timers()))
        with mock.patch.object(filetimer, "_children", side_effect=OSError(errno.EMFILE, "Too many open files")), \
                self.assertLogs("filetimer", "ERROR") as logs:
            self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
            self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        self.assertIn("kill worker process: pid %d: 1 processes of its tree could not be read" % worker.pid,
                      "\n".join(logs.output))


class ForbiddenPidTest(FiletimerTestCase):
    """Safety rule: pid <= 1, negative pids and the server's own pid are never signalled."""

    def test_forbidden_pids_never_reach_kill(self):
        kills, pidfd_signals = [], []
        with mock.patch("os.kill", lambda pid, sig: kills.append((pid, sig))), \
                mock.patch.object(signal, "pidfd_send_signal", lambda *a: pidfd_signals.append(a), create=True):
            server = self.serve(max_interval=0.02)
            past = time.time() - 1
            with self.assertLogs("filetimer", "WARNING") as logs:
                server.register_timers([FileTimerRequest(pid, "s", past, 9) for pid in (1, 0, -1, -5, os.getpid())])
                write_raw(self.path, line(0, "s", past) + line(1, "s", past) + line(-1, "s", past))
                self.assertTrue(wait_for(lambda: server.rejected_count == 3))
                time.sleep(0.2)  # many passes
            self.assertEqual(server.timers(), [])
            self.assertTrue(any("refusing to signal pid %d" % os.getpid() in r.getMessage() for r in logs.records))
        self.assertEqual((kills, pidfd_signals), ([], []))
        self.assertNotIn("kill worker process", self.event_names())

    # Each layer on its own, so that one guard cannot hide the loss of another.

    def record_signals(self):
        """Replace every way to send a signal with a recorder, for the rest of the test; return the record."""
        sent = []
        for name, module in (("kill", os), ("killpg", os), ("pidfd_send_signal", signal)):
            patcher = mock.patch.object(module, name, lambda *args, name=name: sent.append((name, *args)), create=True)
            patcher.start()
            self.addCleanup(patcher.stop)
        return sent

    def test_signal_refuses_forbidden_pids_itself(self):
        sent = self.record_signals()
        server = FileTimerServer(self.path)
        self.addCleanup(server.stop)
        for pid in (1, 0, -1, os.getpid()):
            for pidfd in (None, -1):  # -1: a pidfd that would go straight to the recording pidfd_send_signal
                with self.subTest(pid=pid, pidfd=pidfd), self.assertLogs("filetimer", "WARNING"):
                    self.assertIs(server._reaper.signal(filetimer._Worker(pid, pidfd, None), signal.SIGKILL), False)
        self.assertEqual(sent, [])

    def test_watch_refuses_forbidden_pids_itself(self):
        sent = self.record_signals()
        server = FileTimerServer(self.path)
        self.addCleanup(server.stop)
        with mock.patch.object(filetimer._Worker, "attach", return_value=None) as attach:
            for pid in (1, 0, -1):
                with self.subTest(pid=pid), self.assertLogs("filetimer", "WARNING"):
                    request = FileTimerRequest(pid, "s", time.time() + 60, signal.SIGKILL)
                    self.assertIsNone(server._timers.watch(request))
        attach.assert_not_called()
        self.assertEqual((server._timers.workers, sent), ({}, []))


class PidReuseTest(FiletimerTestCase):
    """Safety rule: a timer is bound to its worker's identity, never to a later owner of the pid."""

    def run_in_pid_namespace(self, mode):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare to control pid allocation")
        result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *PYTHON, "-c", REUSE,
                                 self.path, mode], env=ENV, capture_output=True, text=True, timeout=SLACK * 3)
        if result.returncode != 0 and "unshare" in result.stderr:
            self.skipTest("unshare is not permitted here: " + result.stderr.strip()[:200])
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout.splitlines()[-1])
        if report["pids"] != [5000, 5000, 6000, 6000]:
            self.skipTest("could not choose pids: %s" % report["pids"])
        self.assertEqual(report["alive"], [True, True])
        self.assertNotIn("kill worker process", report["events"])

    def test_reused_pid_is_never_signalled_with_pidfd(self):
        if not filetimer._HAVE_PIDFD:
            self.skipTest("no pidfd on this platform or Python")
        self.run_in_pid_namespace("pidfd")

    def test_reused_pid_is_never_signalled_with_start_time(self):
        self.run_in_pid_namespace("start-time")

    def test_a_request_naming_an_earlier_process_of_the_pid_is_refused(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        earlier = filetimer._process_start_time(sleeper.pid) - 1  # the start time of the pid's previous owner
        with FileTimerClient(self.path) as client:
            client._send_line(FileTimerRequest(sleeper.pid, "stale", time.time() + 0.1, 9, start_time=earlier)._line())
        self.assertTrue(wait_for(lambda: server.request_count == 1))
        self.assertEqual(server.timers(), [])
        with self.assertRaises(subprocess.TimeoutExpired):  # past the deadline
            sleeper.wait(0.3)

    @unittest.skipUnless(filetimer._HAVE_PIDFD, "a worker bound by its pidfd alone")
    def test_a_worker_bound_by_its_pidfd_alone_takes_later_timers_that_name_its_start_time(self):
        # /proc could not be read when the server first saw the worker (the fd limit): its pidfd is its identity.
        # Its later requests name its start time, as every filetimer client's do: armed for the same record.
        server = self.serve()
        sleeper = self.spawn_sleeper()
        start_time = filetimer._process_start_time(sleeper.pid)
        with mock.patch.object(filetimer, "_start_time_now", side_effect=OSError(errno.EMFILE, "Too many open files")):
            server.register_timers([FileTimerRequest(sleeper.pid, "first", time.time() + 600, 9)])
        server.register_timers([FileTimerRequest(sleeper.pid, "second", time.time() + 0.1, 9, start_time)])
        self.assertEqual(sorted(t.scope_id for t in server.timers()), ["first", "second"])
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)

    def test_a_request_naming_the_new_owner_of_a_watched_pid_replaces_the_exited_worker(self):
        # No pidfd: the start time is the identity. The server watches the pid for an earlier process, which exits
        # unseen; the identity source then says a new process has the pid, and that process arms a timer. The
        # earlier process's timer goes with it (never fires at the new owner) and the new one's is armed.
        sleeper = self.spawn_sleeper()
        real_start_time = filetimer._start_time_now
        earlier = [True]  # while set, the identity source reports the pid's earlier owner

        def start_time(pid):
            value = real_start_time(pid)
            return value - 1 if earlier and pid == sleeper.pid and value is not None else value

        with mock.patch.object(filetimer, "_HAVE_PIDFD", False), \
                mock.patch.object(filetimer, "_start_time_now", start_time):
            server = self.serve()
            server.register_timers([FileTimerRequest(sleeper.pid, "earlier", time.time() + 0.2, 9)])  # as torch's
            self.assertEqual([t.scope_id for t in server.timers()], ["earlier"])
            earlier.clear()  # it exited; the sleeper has its pid now
            new_start_time = real_start_time(sleeper.pid)
            server.register_timers([FileTimerRequest(sleeper.pid, "new", time.time() + 600, 9, new_start_time)])
            self.assertEqual([(t.scope_id, t.start_time) for t in server.timers()], [("new", new_start_time)])
            with self.assertRaises(subprocess.TimeoutExpired):  # past the earlier process's deadline
                sleeper.wait(0.4)
        self.assertNotIn("kill worker process", self.event_names())

    def test_a_worker_whose_pid_was_reused_is_never_signalled_with_start_time(self):
        # No pidfd: the start time is the identity; after the timer is armed it says the pid has a new owner.
        sleeper = self.spawn_sleeper()
        real_start_time = filetimer._start_time_now
        reused = []

        def start_time(pid):
            value = real_start_time(pid)
            return value + 1 if reused and pid == sleeper.pid and value is not None else value

        with mock.patch.object(filetimer, "_HAVE_PIDFD", False), \
                mock.patch.object(filetimer, "_start_time_now", start_time):
            server = self.serve()
            server.register_timers([FileTimerRequest(sleeper.pid, "s", time.time() + 0.2, signal.SIGKILL)])
            self.assertEqual(len(server.timers()), 1)
            reused.append(True)
            self.assertTrue(wait_for(lambda: "timer expired" in self.event_names()))
            with self.assertRaises(subprocess.TimeoutExpired):
                sleeper.wait(0.2)
        self.assertNotIn("kill worker process", self.event_names())

    def test_an_acquire_naming_an_earlier_process_leaves_the_live_timers_armed(self):
        server = self.serve()
        hung = self.spawn_sleeper()
        start_time = filetimer._process_start_time(hung.pid)
        server.register_timers([FileTimerRequest(hung.pid, "a", time.time() + 0.3, 9, start_time),
                                FileTimerRequest(hung.pid, "b", time.time() + 0.5, 9, start_time)])
        server.register_timers([FileTimerRequest(hung.pid, "a", time.time() + 600, 9, start_time - 1)])  # stale
        self.assertEqual(sorted(t.scope_id for t in server.timers()), ["a", "b"])
        self.assertEqual(hung.wait(SLACK), -signal.SIGKILL)

    def test_acquire_binds_the_timer_to_the_process_start_time(self):
        # So that a pid another process holds by the time the server reads the request is never armed: here the
        # server's identity source says the second sleeper's pid now belongs to a later process.
        server = self.serve()
        sleeper, reused = self.spawn_sleeper(), self.spawn_sleeper()
        real_start_time = filetimer._start_time_now

        def start_time(pid):
            value = real_start_time(pid)
            return value + 1 if pid == reused.pid and value is not None else value

        with mock.patch.object(filetimer, "_start_time_now", start_time):
            for pid in (sleeper.pid, reused.pid):
                result = cli("acquire", "--scope", "s", "--after", "60", "--pid", str(pid), "--path", self.path)
                self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(wait_for(lambda: server.request_count == 2))
        self.assertEqual([(t.worker_pid, t.start_time) for t in server.timers()],
                         [(sleeper.pid, real_start_time(sleeper.pid))])

    @unittest.skipUnless(filetimer._HAVE_PIDFD, "stages the reused pid with a pidfd")
    def test_an_escalation_goes_with_its_exited_worker_and_never_hits_a_reused_pid(self):
        # The worker exits on its SIGTERM, inside the kill_after window, and a new process with its pid arms a timer.
        # Staged without root: the server's identity source binds the first process it sees for the pid of `heir`
        # to `worker` (its pidfd), so heir's pid is the one that exits and is then taken by a new process.
        server = self.serve(kill_after=0.3)
        worker, heir = self.spawn_sleeper(), self.spawn_sleeper()
        real_attach = filetimer._Worker.attach
        bound = []

        def attach(pid, start_time):
            if pid != heir.pid or bound:
                return real_attach(pid, start_time)
            bound.append(real_attach(worker.pid, None))
            bound[0].pid = heir.pid
            return bound[0]

        with mock.patch.object(filetimer._Worker, "attach", attach):
            server.register_timers([FileTimerRequest(heir.pid, "step", time.time() + 0.1, signal.SIGTERM)])
            self.assertEqual(worker.wait(SLACK), -signal.SIGTERM)
            self.assertTrue(wait_for(lambda: not server.timers() and not server._timers.workers))  # forgotten: exited
            escalation = self.event_time("kill worker process") + 0.3
            server.register_timers([FileTimerRequest(heir.pid, "new process", time.time() + 600, signal.SIGKILL)])
            self.assertEqual([t.scope_id for t in server.timers()], ["new process"])
        with self.assertRaises(subprocess.TimeoutExpired):  # past the escalation the exited worker had
            heir.wait(max(0.0, escalation - time.monotonic()) + 0.2)
        self.assertNotIn("escalate worker process", self.event_names())


class FifoPathTest(FiletimerTestCase):
    """Safety rule: the server never removes or follows what is not its own stale FIFO."""

    def assert_refused(self, path):
        with self.assertRaises(FileExistsError) as caught:
            self.addCleanup(FileTimerServer(path).stop)  # only reached by a server that was not refused
        self.assertIn(path, str(caught.exception))

    def test_regular_file_directory_and_symlinks_are_left_alone(self):
        regular = os.path.join(self.dir, "regular")
        with open(regular, "w") as f:
            f.write("precious")
        directory = os.path.join(self.dir, "directory")
        os.mkdir(directory)
        fifo = os.path.join(self.dir, "target.fifo")
        os.mkfifo(fifo)
        links = {}
        for name, target in {"to-file": regular, "to-fifo": fifo, "dangling": "/nonexistent/x"}.items():
            links[name] = os.path.join(self.dir, name)
            os.symlink(target, links[name])
        for path in [regular, directory, *links.values()]:
            with self.subTest(path=path):
                self.assert_refused(path)
        with open(regular) as f:
            self.assertEqual(f.read(), "precious")
        self.assertTrue(os.path.isdir(directory))
        for name, path in links.items():
            self.assertTrue(os.path.islink(path), name)
        self.assertFalse(os.path.exists("/nonexistent/x"))

    def test_a_fifo_another_kind_of_server_reads_is_refused(self):
        os.mkfifo(self.path, 0o600)  # read by a server that holds no lock on it, as torch's
        reader = self.spawn([*PYTHON, "-c", "import sys, time\nwith open(sys.argv[1]) as f:\n    while True:\n"
                             "        line = f.readline()\n        print(line.strip(), flush=True) if line else "
                             "time.sleep(0.01)\n", self.path], stdout=subprocess.PIPE, text=True)
        self.assertTrue(wait_for(lambda: filetimer._fifo_has_reader(self.path)))
        with self.assertRaises(FileExistsError) as caught:
            self.addCleanup(FileTimerServer(self.path).stop)
        self.assertIn("already being served", str(caught.exception))
        write_raw(self.path, b"still theirs\n")
        self.assertEqual(reader.stdout.readline().strip(), "still theirs")

    def test_fifo_of_a_live_server_is_refused_and_that_server_keeps_working(self):
        first = self.serve()
        with self.assertRaises(FileExistsError) as caught:
            self.addCleanup(FileTimerServer(self.path).stop)
        self.assertIn("already being served", str(caught.exception))
        with FileTimerClient(self.path) as client:
            client.release("still here")
        self.assertTrue(wait_for(lambda: first.request_count == 1))

    def test_stale_fifo_is_replaced(self):
        os.mkfifo(self.path, 0o644)
        os.chmod(self.path, 0o644)
        stale = os.stat(self.path).st_ino
        os.link(self.path, os.path.join(self.dir, "stale.fifo"))  # keeps the inode taken: it cannot be reused
        server = self.serve()
        self.assertNotEqual(os.stat(self.path).st_ino, stale)  # a new FIFO, made by the server
        self.assertEqual(stat_mode(self.path), 0o600)
        with FileTimerClient(self.path) as client:
            client.release("x")
        self.assertTrue(wait_for(lambda: server.request_count == 1))

    def test_mode_is_exact_whatever_the_umask(self):
        for umask, mode in [(0o077, 0o620), (0o000, 0o600), (0o022, 0o620)]:
            with self.subTest(umask=oct(umask), mode=oct(mode)):
                old = os.umask(umask)
                try:
                    server = FileTimerServer(self.path, mode=mode)
                finally:
                    os.umask(old)
                try:
                    self.assertEqual(stat_mode(self.path), mode)
                finally:
                    server.stop()

    def test_the_fifo_is_made_with_its_mode_not_fixed_later(self):
        # Under umask 0 a FIFO made with the default mode 0666 could be opened by anyone before a chmod.
        modes = []
        real_mkfifo = os.mkfifo

        def mkfifo(path, mode=0o666, *args, **kwargs):
            real_mkfifo(path, mode, *args, **kwargs)
            modes.append(stat_mode(path))

        old = os.umask(0)
        try:
            with mock.patch.object(os, "mkfifo", mkfifo):
                self.addCleanup(FileTimerServer(self.path, mode=0o620).stop)
        finally:
            os.umask(old)
        self.assertEqual(modes, [0o620])

    def test_stop_removes_only_its_own_fifo(self):
        old = FileTimerServer(self.path)
        self.addCleanup(old.stop)
        os.unlink(self.path)  # someone cleaned up, and a newer server took the path
        new = self.serve()
        old.stop()
        self.assertTrue(os.path.exists(self.path))
        with FileTimerClient(self.path) as client:
            client.release("x")
        self.assertTrue(wait_for(lambda: new.request_count == 1))
        new.stop()
        self.assertFalse(os.path.exists(self.path))


class SharedMachineTest(FiletimerTestCase):
    """Safety rules on a machine shared by several users: no request reaches another user's FIFO."""

    def as_root(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to make files of another user")

    def test_the_client_refuses_a_fifo_of_another_user_before_writing(self):
        self.as_root()
        server = self.serve()
        os.chown(self.path, NOBODY, -1)
        with FileTimerClient(self.path) as client, self.assertRaises(PermissionError) as caught:
            client.acquire("s", time.time() + 60)
        self.assertIn(self.path, str(caught.exception))
        self.assertIn("nobody", str(caught.exception))
        with FileTimerClient(self.path, keep_open=True) as client:
            self.assertRaises(PermissionError, client.release, "s")
        time.sleep(0.1)
        self.assertEqual((server.request_count, server.rejected_count), (0, 0))

    def test_an_unwritable_fifo_is_exit_2_not_no_server(self):
        self.as_root()
        self.serve()  # root's FIFO, mode 0600: nobody may not write it
        os.chmod(self.dir, 0o755)
        read_end, write_end = os.pipe()
        pid = os.fork()  # as nobody, in a child of this process (nobody may not read this interpreter's files)
        if pid == 0:
            try:
                os.dup2(write_end, 2)
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                sys.stderr = os.fdopen(2, "w")
                code = filetimer.main(["acquire", "--scope", "s", "--after", "60", "--pid", str(os.getppid()),
                                       "--path", self.path])
                sys.stderr.flush()
            finally:
                os._exit(locals().get("code", 99))
        os.close(write_end)
        with os.fdopen(read_end) as f:
            err = f.read()
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                         else status >> 8, 2, err)
        self.assertIn(self.path, err)

    def test_the_server_refuses_a_fifo_or_directory_of_another_user(self):
        self.as_root()
        os.mkfifo(self.path)
        os.chown(self.path, NOBODY, -1)
        with self.assertRaises(PermissionError) as caught:
            FileTimerServer(self.path)
        self.assertIn(self.path, str(caught.exception))
        self.assertEqual(os.stat(self.path).st_uid, NOBODY)  # left alone
        theirs = os.path.join(self.dir, "theirs")
        os.mkdir(theirs)
        os.chown(theirs, NOBODY, -1)
        with self.assertRaises(PermissionError) as caught:
            FileTimerServer(os.path.join(theirs, "x.fifo"))
        self.assertIn(theirs, str(caught.exception))
        shared = os.path.join(self.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # anyone may replace a file in it
        self.assertRaises(PermissionError, FileTimerServer, os.path.join(shared, "x.fifo"))
        result = cli("serve", os.path.join(theirs, "x.fifo"))
        self.assertEqual(result.returncode, 2)
        self.assertIn(theirs, result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    # The same guarantees without root: the identity source (fstat, stat, lstat) reports another user as the owner.

    @staticmethod
    def owned_by_nobody(name, paths=()):
        """A patch of os.<name> that reports NOBODY as the owner of these paths (of every FIFO, for fstat)."""
        real = getattr(os, name)

        def reporting(target, *args, **kwargs):
            st = real(target, *args, **kwargs)
            if (name == "fstat" and filetimer.stat.S_ISFIFO(st.st_mode)) or (name != "fstat" and target in paths):
                return os.stat_result((*st[:4], NOBODY, *st[5:10]))
            return st

        return mock.patch.object(os, name, reporting)

    def test_the_client_refuses_a_fifo_of_another_user_without_root(self):
        server = self.serve()
        for keep_open in (False, True):
            with self.subTest(keep_open=keep_open), FileTimerClient(self.path, keep_open=keep_open) as client:
                with self.owned_by_nobody("fstat"), self.assertRaises(PermissionError) as caught:
                    client.acquire("s", time.time() + 60)
                self.assertIn(self.path, str(caught.exception))
        time.sleep(0.1)
        self.assertEqual((server.request_count, server.rejected_count), (0, 0))

    def test_the_server_refuses_a_fifo_or_directory_of_another_user_without_root(self):
        os.mkfifo(self.path, 0o600)
        environment = {"XDG_RUNTIME_DIR": "", "FILETIMER_PATH": "", "TORCHELASTIC_TIMER_FILE": ""}
        private = os.path.join(self.dir, "filetimer-%d" % os.geteuid())
        os.mkdir(private, 0o700)
        for theirs, path in ((self.path, self.path), (self.dir, self.path), (private, None)):
            with self.subTest(theirs=theirs), mock.patch.dict(os.environ, environment), \
                    mock.patch.object(tempfile, "tempdir", self.dir):
                with self.owned_by_nobody("lstat", (theirs,)), self.owned_by_nobody("stat", (theirs,)), \
                        self.assertRaises(PermissionError) as caught:
                    self.addCleanup(FileTimerServer(path).stop)
                self.assertIn(theirs, str(caught.exception))
        self.assertEqual(os.listdir(private), [])
        self.assertTrue(filetimer.stat.S_ISFIFO(os.lstat(self.path).st_mode))  # left alone

    def test_an_unwritable_fifo_is_exit_2_not_no_server_without_root(self):
        self.serve()
        real_open = os.open

        def refusing(path, flags, *args, **kwargs):
            if path == self.path and flags & os.O_WRONLY:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return real_open(path, flags, *args, **kwargs)

        err = io.StringIO()
        with mock.patch.object(os, "open", refusing), contextlib.redirect_stderr(err):
            status = filetimer.main(["release", "--scope", "s", "--pid", str(os.getpid()), "--path", self.path])
        self.assertEqual(status, 2, err.getvalue())
        self.assertIn(self.path, err.getvalue())

    def test_a_mode_that_lets_others_write_or_read_is_refused(self):
        for mode in (0o602, 0o666, 0o777, 0o604, 0o640, 0o644, 0o660):
            with self.subTest(mode=oct(mode)):
                with self.assertRaises(ValueError) as caught:
                    FileTimerServer(self.path, mode=mode)
                self.assertIn("%03o" % mode, str(caught.exception))
        self.assertFalse(os.path.exists(self.path))
        for mode in ("666", "644"):
            result = cli("serve", self.path, "--mode", mode)
            self.assertEqual(result.returncode, 2)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn(mode, result.stderr)
        server = self.serve(mode=0o620)  # the group may
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o620)
        server.stop()

    def test_another_users_fifo_is_exit_2_even_with_no_reader(self):
        os.mkfifo(self.path, 0o600)  # nobody reads it
        real_stat = os.stat

        def owned_by_another(path, *args, **kwargs):
            st = list(real_stat(path, *args, **kwargs))
            st[4] = os.geteuid() + 1
            return os.stat_result(st)

        with mock.patch.object(filetimer.os, "stat", owned_by_another), \
                contextlib.redirect_stderr(open(os.devnull, "w")) as err:
            self.addCleanup(err.close)
            self.assertEqual(filetimer.main(["acquire", "--scope", "s", "--after", "5", "--pid", str(os.getpid()),
                                             "--path", self.path]), 2)
        with self.assertRaises(PermissionError), mock.patch.object(filetimer.os, "stat", owned_by_another):
            FileTimerClient(self.path).acquire("s", time.time() + 5)


class StateFileTest(FiletimerTestCase):
    """A restart never kills a healthy worker nor frees a hung one; its state file is its own."""

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.dir, "timers.state")

    def saved(self):
        return saved_timers(self.state, self.path)

    def has_schedule(self):
        with open(self.state, "rb") as f:
            return b'{"record": "schedule"' in f.read()

    def test_the_file_is_private_and_follows_the_timers_at_once(self):
        server = self.serve(state_file=self.state)
        sleeper = self.spawn_sleeper()
        far = time.time() + 600
        server.register_timers([FileTimerRequest(sleeper.pid, "a", far, 9),
                                FileTimerRequest(sleeper.pid, "b", far, 15)])
        self.assertEqual({(t.scope_id, t.signal) for t in self.saved()}, {("a", 9), ("b", 15)})  # no waiting
        self.assertEqual(stat_mode(self.state), 0o600)
        server.register_timers([FileTimerRequest(sleeper.pid, "a", -1)])
        self.assertEqual([t.scope_id for t in self.saved()], ["b"])
        with FileTimerClient(self.path) as client:
            client.release("nothing")  # a line read from the FIFO is in the file before the server applies it
        self.assertTrue(wait_for(lambda: server.request_count == 4))
        with open(self.state, "rb") as f:
            self.assertIn(b'"scope_id": "nothing"', f.read())
        self.assertEqual(sorted(os.listdir(self.dir)), ["timer.fifo", "timers.state"])  # no temporary left
        with open(self.state, "rb") as f:  # the identity the server saw, for lines that name none (torch's)
            self.assertIn(b'{"record": "identity", "pid": %d, "start_time": %d}'
                          % (sleeper.pid, filetimer._process_start_time(sleeper.pid)), f.read())

    def test_a_crash_right_after_a_read_neither_kills_the_healthy_nor_frees_the_hung(self):
        server, command = self.spawn_server(state_file=self.state)
        healthy = self.spawn_lingering_worker("with filetimer.expires(after=0.4):\n    time.sleep(0.02)\n")
        hung = self.spawn_worker("with filetimer.expires(after=0.4):\n    time.sleep(60)\n", stderr=subprocess.DEVNULL)
        self.assertEqual(healthy.stdout.readline().strip(), "done")
        self.assertTrue(wait_for(lambda: command()[0] == 3))  # both acquires and the release were read
        server.kill()
        server.wait()
        self.serve(state_file=self.state)
        self.assertEqual(hung.wait(SLACK), -signal.SIGKILL)
        time.sleep(0.3)  # the healthy worker's deadline has passed too
        self.assertIsNone(healthy.poll())

    def test_timers_that_expired_while_no_server_ran_fire_on_restart(self):
        sleeper = self.spawn_sleeper()
        write_state(self.state, self.path, [wire(sleeper.pid, "overdue", time.time() - 5, 9,
                                                 filetimer._process_start_time(sleeper.pid))])
        self.serve(state_file=self.state)
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)
        self.assertEqual(self.event_names(sleeper.pid), ["timer expired", "kill worker process"])

    def test_a_restart_never_binds_a_torch_workers_timer_to_a_new_owner_of_its_pid(self):
        server = self.serve(state_file=self.state)
        sleeper = self.spawn_sleeper()
        write_raw(self.path, line(sleeper.pid, "torch", time.time() + 0.3))  # torch's client sends no start time
        self.assertTrue(wait_for(lambda: server.request_count == 1))
        write_raw(self.path, line(sleeper.pid, "later", time.time() + 0.3))  # the worker is known: no record
        self.assertTrue(wait_for(lambda: server.request_count == 2))
        server.stop()
        real = filetimer._start_time_now
        # The identity source says the process at that pid is another one now (a reused pid).
        with mock.patch.object(filetimer, "_start_time_now", lambda pid: real(pid) + 1):
            restarted = self.serve(state_file=self.state)
        self.assertEqual(restarted.timers(), [])
        time.sleep(0.5)
        self.assertIsNone(sleeper.poll())

    def test_a_release_sent_while_the_server_is_down_reaches_the_next_one(self):
        server, command = self.spawn_server(state_file=self.state)
        worker = self.spawn_worker("with filetimer.expires(after=0.4):\n    print('armed', flush=True)\n"
                                   "    sys.stdin.readline()\nprint('released', flush=True)\nsys.stdin.read()\n",
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(worker.stdout.readline().strip(), "armed")
        armed = time.monotonic()
        self.assertTrue(wait_for(lambda: command()[2] == 1))
        server.kill()
        server.wait()
        worker.stdin.write("go\n")
        worker.stdin.flush()
        self.assertEqual(worker.stdout.readline().strip(), "released")  # at once, without an error
        restarted = self.serve(state_file=self.state)
        self.assertTrue(wait_for(lambda: restarted.timers() == [] and restarted.request_count == 1))
        time.sleep(max(0.0, armed + 0.55 - time.monotonic()))
        self.assertIsNone(worker.poll())
        self.assertEqual(self.saved(), [])

    def test_a_signal_handler_acquire_is_never_overtaken_by_an_older_kept_release(self):
        # A handler that runs while the kept lines are being delivered (here called where a signal could land,
        # just before the kept release of its scope is written) must not see that older release arrive after it.
        worker = self.spawn_worker(textwrap.dedent("""
            filetimer.FileTimerClient._deliver_kept = lambda client: None  # delivered by the next request only
            client = filetimer._configured_client
            client.release("step")  # no server: kept
            print(list(client._kept), flush=True)
            while not filetimer._fifo_has_reader(path) if os.path.exists(path) else True:
                time.sleep(0.01)
            handled, write_line = [], client._write_line
            def interrupted(fd, line, *args):
                if b'"step"' in line and not handled:
                    handled.append(1)
                    client.acquire("step", time.time() + 0.2)  # the handler; the step then hangs
                return write_line(fd, line, *args)
            client._write_line = interrupted
            client.release("other")  # delivers the kept release first
            time.sleep(60)
        """), stdout=subprocess.PIPE, text=True)
        self.assertEqual(worker.stdout.readline().strip(), "['step']")
        self.serve()
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)

    def test_a_request_salvaged_from_a_long_bad_line_survives_a_restart(self):
        # Under PIPE_BUF of a line carried over from one read, the rest in the next: a line of 12 KiB whose request
        # at its end ingest applies. The journal holds the line as read; the replay must salvage the same request.
        sleeper = self.spawn_sleeper()
        server = FileTimerServer(self.path, state_file=self.state)
        self.addCleanup(server.stop)
        server._ingest(b"x" * (filetimer.PIPE_BUF - 100))
        server._ingest(b"y" * 8000 + wire(sleeper.pid, "salvaged", time.time() + 600))
        self.assertEqual([t.scope_id for t in server.timers()], ["salvaged"])
        server.stop()
        restarted = FileTimerServer(self.path, state_file=self.state)
        self.addCleanup(restarted.stop)
        self.assertEqual([t.scope_id for t in restarted.timers()], ["salvaged"])

    def test_a_kept_release_never_cancels_a_later_acquire(self):
        server, command = self.spawn_server(state_file=self.state)
        sleeper = self.spawn_sleeper()
        start_time = filetimer._process_start_time(sleeper.pid)
        # The client's background delivery is held back: the next request must deliver the release, first.
        with mock.patch.object(FileTimerClient, "_deliver_kept", lambda client: None), \
                FileTimerClient(self.path) as client:
            client._send_line(wire(sleeper.pid, "step", time.time() + 600, 9, start_time))
            self.assertTrue(wait_for(lambda: command()[2] == 1))
            server.kill()
            server.wait()
            client._send_line(wire(sleeper.pid, "step", -1, 0, start_time), later="step")
            self.assertEqual(list(client._kept), ["step"])
            restarted = self.serve(state_file=self.state)
            self.assertEqual(len(restarted.timers()), 1)  # restored: the release has not arrived yet
            client._send_line(wire(sleeper.pid, "step", time.time() + 0.2, 9, start_time))
            self.assertEqual(client._kept, {})
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)

    def test_lines_a_crashed_server_had_not_read_reach_the_next_one(self):
        server, command = self.spawn_server(state_file=self.state)
        sleeper = self.spawn_sleeper()
        start_time = filetimer._process_start_time(sleeper.pid)
        with mock.patch.object(FileTimerClient, "_deliver_kept", lambda client: None), \
                FileTimerClient(self.path, keep_open=True) as client:
            for scope in ("a", "b"):
                client._send_line(wire(sleeper.pid, scope, time.time() + 600, 9, start_time))
            self.assertTrue(wait_for(lambda: command()[2] == 2))
            os.kill(server.pid, signal.SIGSTOP)  # busy elsewhere: the release waits in the pipe
            client._send_line(wire(sleeper.pid, "a", -1, 0, start_time), later="a")
            server.kill()
            server.wait()
            client._send_line(wire(sleeper.pid, "b", -1, 0, start_time), later="b")  # no server: kept
            self.assertEqual(list(client._kept), ["b"])
            restarted = self.serve(state_file=self.state)  # serves the same pipe, with the release of "a" in it
            self.assertTrue(wait_for(lambda: [t.scope_id for t in restarted.timers()] == ["b"]))
            client._send_line(wire(sleeper.pid, "c", -1, 0, start_time))
            self.assertTrue(wait_for(lambda: restarted.timers() == []))
        self.assertIsNone(sleeper.poll())

    def test_a_restart_during_the_dump_grace_still_kills(self):
        server, _ = self.spawn_server(state_file=self.state, dump_grace=0.4)
        worker = self.spawn_worker("with filetimer.expires(after=0.2):\n    time.sleep(60)\n", stderr=subprocess.PIPE)
        for line in worker.stderr:  # the stack dump: the worker is in its grace
            if b"most recent call first" in line:
                break
        self.assertTrue(wait_for(self.has_schedule))  # else a crash before it is written dumps and schedules again
        server.kill()
        server.wait()
        self.assertIsNone(worker.poll())
        self.serve(state_file=self.state, dump_grace=0.4)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertEqual(self.event_names(worker.pid), ["kill worker process"])  # not dumped again

    def test_a_restart_before_the_escalation_still_escalates(self):
        server, _ = self.spawn_server(state_file=self.state, kill_after=0.4)
        worker = self.spawn_worker(
            "signal.signal(signal.SIGTERM, lambda *_: print('term', flush=True))\n"
            "filetimer.configure(filetimer.FileTimerClient(path, signal.SIGTERM, dump_stacks=False))\n"
            "with filetimer.expires(after=0.2):\n    time.sleep(60)\n", stdout=subprocess.PIPE, text=True)
        self.assertEqual(worker.stdout.readline().strip(), "term")
        self.assertTrue(wait_for(self.has_schedule))  # else a crash before it is written sends SIGTERM again
        server.kill()
        server.wait()
        self.serve(state_file=self.state, kill_after=0.4)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertEqual(self.event_names(worker.pid), ["escalate worker process"])  # SIGTERM is not sent again

    def test_crashes_at_random_moments_kill_no_healthy_worker_and_free_no_hung_one(self):
        rounds, random_state = 3, __import__("random").Random(os.getpid())
        healthy = [self.spawn([*PYTHON, "-c", WORKER + HEALTHY, self.path, str(rounds * 0.25 + 0.8)])
                   for _ in range(2)]
        hung, died, gaps = [], {}, []

        def watch(child):
            child.wait()
            died[child.pid] = time.monotonic()

        restarted = time.monotonic()
        for _ in range(rounds):
            server, _ = self.spawn_server(state_file=self.state)
            gaps.append(time.monotonic() - restarted)
            child = self.spawn_worker("with filetimer.expires(after=0.3):\n    print(time.monotonic() + 0.3, "
                                      "flush=True)\n    time.sleep(60)\n", stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
            hung.append((child, float(child.stdout.readline())))
            threading.Thread(target=watch, args=(child,), daemon=True).start()
            time.sleep(random_state.uniform(0.02, 0.2))
            server.kill()
            server.wait()
            restarted = time.monotonic()
        self.serve(state_file=self.state)
        gaps.append(time.monotonic() - restarted)
        for child, deadline in hung:
            self.assertEqual(child.wait(SLACK), -signal.SIGKILL)
            self.assertTrue(wait_for(lambda child=child: child.pid in died))
            self.assertLess(died[child.pid] - deadline, max(gaps) + 0.1 + 1.0)  # gap + grace + slack
        for child in healthy:
            self.assertEqual(child.wait(SLACK), 0)

    def test_a_state_file_another_user_could_have_written_is_refused_unread(self):
        sleeper = self.spawn_sleeper()
        overdue = wire(sleeper.pid, "planted", time.time() - 1, 9, filetimer._process_start_time(sleeper.pid))
        real_fstat = os.fstat

        def owned_by_another(fd):  # the identity source, as if another user owned the file (no root needed)
            st = list(real_fstat(fd))
            st[4] = os.geteuid() + 1
            return os.stat_result(st)

        others = os.path.join(self.dir, "others")
        os.mkdir(others, 0o777)
        os.chmod(others, 0o777)  # writable by all, no sticky bit
        planted = os.path.join(self.dir, "planted")
        cases = {
            "writable by others": (lambda: os.chmod(self.state, 0o646), self.state, contextlib.nullcontext()),
            "writable by the group": (lambda: os.chmod(self.state, 0o620), self.state, contextlib.nullcontext()),
            "a symbolic link": (lambda: (os.rename(self.state, planted), os.symlink(planted, self.state)),
                                self.state, contextlib.nullcontext()),
            "owned by another user": (lambda: None, self.state,
                                      mock.patch.object(filetimer.os, "fstat", owned_by_another)),
            "in a directory others can write": (lambda: None, os.path.join(others, "x.state"),
                                                contextlib.nullcontext()),
        }
        if os.geteuid() == 0:
            cases["owned by nobody (for real)"] = (lambda: os.chown(self.state, 65534, 65534), self.state,
                                                   contextlib.nullcontext())
        for name, (plant, state_file, patch) in cases.items():
            with self.subTest(name):
                for path in (self.state, planted, os.path.join(others, "x.state")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                write_state(self.state, self.path, [overdue])
                write_state(os.path.join(others, "x.state"), self.path, [overdue])
                plant()
                unread = mock.patch.object(filetimer._Journal, "restore", side_effect=AssertionError("it was read"))
                with patch, unread, self.assertRaises(OSError) as caught:
                    self.addCleanup(FileTimerServer(self.path, state_file=state_file).stop)
                self.assertIn(os.path.dirname(state_file) if "directory" in name else state_file,
                              str(caught.exception))
                self.assertFalse(os.path.exists(self.path))  # refused before the FIFO was made
        result = cli("serve", self.path, "--state-file", os.path.join(others, "x.state"))
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        time.sleep(0.1)
        self.assertIsNone(sleeper.poll())  # nobody was signalled on the planted file's word

    def test_a_state_file_larger_than_the_timers_could_need_is_refused_unread(self):
        write_state(self.state, self.path)
        os.truncate(self.state, filetimer._STATE_MAX_BYTES + 1)  # sparse: costs no disk
        with self.assertRaises(OSError) as caught:
            self.addCleanup(FileTimerServer(self.path, state_file=self.state).stop)
        self.assertIn(self.state, str(caught.exception))
        self.assertEqual(os.stat(self.state).st_size, filetimer._STATE_MAX_BYTES + 1)

    def test_a_rewrite_is_a_private_new_file_renamed_over_the_old_one(self):
        target = os.path.join(self.dir, "precious")
        with open(target, "w") as f:
            f.write("keep me")
        os.symlink(target, self.state + ".tmp")  # planted where the rewrite writes
        with self.assertRaises(OSError):
            self.addCleanup(FileTimerServer(self.path, state_file=self.state).stop)
        with open(target) as f:
            self.assertEqual(f.read(), "keep me")
        os.unlink(self.state + ".tmp")
        with open(self.state + ".tmp", "w") as f:  # ours, left by a crash in the middle of a rewrite
            f.write("half a rewrite")
        os.chmod(self.state + ".tmp", 0o600)
        server = self.serve(state_file=self.state)
        inode = os.stat(self.state).st_ino
        with open(self.state, "rb") as reader:
            old = reader.read()
            server._journal.compact()
            self.assertNotEqual(os.stat(self.state).st_ino, inode)
            reader.seek(0)
            self.assertEqual(reader.read(), old)  # a reader of the old file still reads all of it
        self.assertEqual(stat_mode(self.state), 0o600)
        self.assertEqual(sorted(os.listdir(self.dir)), ["precious", "timer.fifo", "timers.state"])

    def test_the_file_grows_with_what_was_read_and_is_rewritten_seldom(self):
        server = self.serve(state_file=self.state)
        sleeper = self.spawn_sleeper()
        far = time.time() + 600
        server.register_timers([FileTimerRequest(sleeper.pid, "long %d" % i, far, 9) for i in range(2000)])
        rewrites = []
        real = filetimer._StateFile.rewrite
        with mock.patch.object(filetimer._StateFile, "rewrite",
                               lambda state, *args: rewrites.append(1) or real(state, *args)):
            for i in range(20000):  # about 2.4 MB of requests
                server.register_timers([FileTimerRequest(sleeper.pid, "churn", far + i, 9)])
            self.assertTrue(wait_for(lambda: os.stat(self.state).st_size < 1.5 * 2**20))
        self.assertIn(len(rewrites), range(1, 4))
        self.assertEqual(len(self.saved()), 2001)

    def test_unreadable_state_files_are_moved_aside_and_unreadable_lines_skipped(self):
        sleeper = self.spawn_sleeper()
        start_time = filetimer._process_start_time(sleeper.pid)
        good = wire(sleeper.pid, "kept", time.time() + 600, 9, start_time)
        write_state(self.state, self.path, [b'{"pid": "x"}\n', b"\x00garbage\n", b"[" * 5000 + b"\n",
                                            b"x" * (3 << 20) + b"\n",
                                            b'{"record": "drop", "pid": "x"}\n', good, b'{"version": 1, "pi'])
        with self.assertLogs("filetimer", "INFO") as logged:
            server = FileTimerServer(self.path, state_file=self.state)
        self.addCleanup(server.stop)
        self.assertEqual([t.scope_id for t in server.timers()], ["kept"])
        self.assertIn("4 unreadable lines skipped", "\n".join(logged.output))
        server.stop()
        header = ('{"format": "filetimer-state", "version": 2, "fifo": %s}\n' % json.dumps(self.path)).encode()
        for name, content in {"an old version": header.replace(b"2", b"1"), "a torn header": header[:40],
                              "no fifo": header.replace(b'"fifo"', b'"pipe"'),
                              "nested too deeply": header[:28] + b', "x": ' + b"[" * 5000 + b"\n"}.items():
            with self.subTest(name):
                with open(self.state, "wb") as f:
                    f.write(content)
                with self.assertLogs("filetimer", "ERROR"):
                    server = FileTimerServer(self.path, state_file=self.state)
                try:
                    self.assertEqual(server.timers(), [])
                    with open(self.state + ".bad", "rb") as f:
                        self.assertEqual(f.read(), content)
                finally:
                    server.stop()

    def test_a_file_that_is_not_a_state_file_is_refused_untouched(self):
        for content in (b"", b"my notes\n", b'{"timers": []}', b"\x00garbage"):
            with self.subTest(content=content):
                with open(self.state, "wb") as f:
                    f.write(content)
                with self.assertRaises(FileExistsError) as caught:
                    self.addCleanup(FileTimerServer(self.path, state_file=self.state).stop)
                self.assertIn(self.state, str(caught.exception))
                with open(self.state, "rb") as f:
                    self.assertEqual(f.read(), content)
                self.assertEqual(sorted(os.listdir(self.dir)), ["timers.state"])  # no FIFO made, nothing renamed

    def test_a_failing_append_is_logged_the_file_rewritten_and_stop_still_cleans_up(self):
        server = self.serve(state_file=self.state)
        sleeper = self.spawn_sleeper()
        real_write = os.write
        state_fd = server._journal.fd

        def disk_full(fd, data):
            if fd == state_fd:
                raise OSError(28, "No space left on device")
            return real_write(fd, data)

        with mock.patch.object(filetimer.os, "write", disk_full), self.assertLogs("filetimer", "ERROR"):
            server.register_timers([FileTimerRequest(sleeper.pid, "lost from the file", time.time() + 60, 9)])
        self.assertTrue(wait_for(lambda: [t.scope_id for t in self.saved()] == ["lost from the file"]))
        server.stop()
        self.assertFalse(os.path.exists(self.path))

    def test_stop_applies_and_records_what_is_still_in_the_pipe(self):
        server = FileTimerServer(self.path, state_file=self.state)  # not started: nothing reads the pipe
        self.addCleanup(server.stop)
        sleeper = self.spawn_sleeper()
        write_raw(self.path, line(sleeper.pid, "late", time.time() + 600))
        server.stop()
        self.assertEqual(server.request_count, 1)
        self.assertEqual([t.scope_id for t in self.saved()], ["late"])

    def test_a_forked_child_leaves_the_parents_kept_releases_to_the_parent(self):
        os.mkfifo(self.path)  # nobody reads it
        with mock.patch.object(FileTimerClient, "_deliver_kept", lambda client: None), \
                FileTimerClient(self.path) as client:
            client.release("parent's")
            self.assertEqual(list(client._kept), ["parent's"])
            pid = os.fork()
            if pid == 0:  # the child: nothing of the parent's to deliver
                os._exit(0 if client._kept == {} and client._deliverer is None else 1)
            self.assertEqual(os.waitpid(pid, 0)[1], 0)
            self.assertEqual(list(client._kept), ["parent's"])

    def test_a_state_path_that_cannot_be_written_is_refused_clearly(self):
        os.mkdir(self.state)
        for path in (self.state, os.path.join(self.dir, "missing", "x.state")):
            with self.subTest(path=path), self.assertRaises(OSError) as caught:
                self.addCleanup(FileTimerServer(self.path, state_file=path).stop)
            self.assertIn(path if path == self.state else os.path.dirname(path), str(caught.exception))
        self.assertFalse(os.path.exists(self.path))  # refused before the FIFO was made

    def test_a_release_kept_during_a_restart_beats_the_restored_timer(self):
        state = self.path + ".state"
        server = FileTimerServer(self.path, state_file=state)
        server.start()
        worker = self.spawn_worker("c = filetimer.FileTimerClient(path, dump_stacks=False)\n"
                                   "c.acquire('step', time.time() + 0.4)\nprint('armed', flush=True)\n"
                                   "sys.stdin.readline()\nc.release('step')\nprint('released', flush=True)\n"
                                   "time.sleep(60)\n", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(worker.stdout.readline().strip(), "armed")
        self.assertTrue(wait_for(lambda: len(server.timers()) == 1))
        crashed = state + ".crash"
        shutil.copy(state, crashed)  # the state file at a crash: a stop() would leave the same
        server.stop()
        os.replace(crashed, state)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        self.assertEqual(worker.stdout.readline().strip(), "released")  # kept: no server
        time.sleep(0.5)  # the deadline passes while no server runs
        restarted = self.serve(state_file=state)
        self.assertTrue(wait_for(lambda: restarted.timers() == []))
        time.sleep(0.4)  # past the 0.3 s a restarted server waits before it fires restored timers
        self.assertIsNone(worker.poll())

    def test_client_raises_broken_pipe_then_finds_a_restarted_server(self):
        for keep_open in (False, True):
            with self.subTest(keep_open=keep_open):
                server, command = self.spawn_server()
                with FileTimerClient(self.path, keep_open=keep_open) as client:
                    client.release("before")
                    self.assertTrue(wait_for(lambda command=command: command() == [1, 0, 0]))
                    server.kill()
                    server.wait()
                    with mock.patch.object(filetimer.time, "sleep"):  # the open retries: not slept here
                        self.assertRaises(BrokenPipeError, client.acquire, "while down", time.time() + 60)
                        client.release("while down")  # kept: no server reads it now
                    restarted = self.serve()
                    client.release("after")  # after the kept one
                    self.assertTrue(wait_for(lambda restarted=restarted: restarted.request_count == 2))
                    restarted.stop()

    def test_two_servers_crash_and_restart_without_mixing_timers(self):
        paths = [os.path.join(self.dir, name) for name in ("a.fifo", "b.fifo")]
        servers = [self.start_cli(path, "--max-interval", "0.1") for path in paths]
        workers = [self.spawn_worker("with filetimer.expires(after=%s):\n    time.sleep(60)\n" % after, path)
                   for after, path in ((0.4, paths[0]), (600, paths[1]))]

        def saved(path):
            timers = saved_timers(path + ".state", path)
            return timers if timers is None else [t.worker_pid for t in timers]

        self.assertTrue(wait_for(lambda: [saved(p) for p in paths] == [[workers[0].pid], [workers[1].pid]]))
        for server in servers:
            server.kill()
            server.wait()
        restarted = [self.start_cli(path, "--max-interval", "0.1") for path in reversed(paths)]
        self.assertEqual(workers[0].wait(SLACK), -signal.SIGKILL)
        self.assertIsNone(workers[1].poll())
        self.assertTrue(wait_for(lambda: saved(paths[0]) == [] and saved(paths[1]) == [workers[1].pid]))
        for server in restarted:
            server.terminate()
            self.assertEqual(server.wait(SLACK), 0)

    def test_a_state_file_of_another_fifo_or_not_a_state_file_is_refused_untouched(self):
        other = os.path.join(self.dir, "other.fifo")
        write_state(self.path + ".state", other)
        notes = os.path.join(self.dir, "notes.txt")
        with open(notes, "w") as f:
            f.write("my notes\n")
        for args in ([], ["--state-file", notes], ["--state-file", other]):
            with self.subTest(args=args):
                os.mkfifo(other) if args and args[-1] == other and not os.path.exists(other) else None
                result = cli("serve", self.path, *args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertIn((args or [None, self.path + ".state"])[-1], result.stderr)
        with open(notes) as f:
            self.assertEqual(f.read(), "my notes\n")
        with open(self.path + ".state", "rb") as f:
            self.assertEqual(json.loads(f.readline())["fifo"], other)
        self.assertEqual(sorted(os.listdir(self.dir)), ["notes.txt", "other.fifo", "timer.fifo.state"])

    def test_a_worker_that_exits_with_timers_armed_leaves_the_saved_state(self):
        # Neither status nor a restart may show the timers of a process that has exited (without a pidfd, the
        # heartbeat finds the exit).
        server = self.serve(state_file=self.state, max_interval=0.1)
        sleeper = self.spawn_sleeper()
        server.register_timers([FileTimerRequest(sleeper.pid, "s", time.time() + 600, 9)])
        self.assertEqual([t.worker_pid for t in saved_timers(self.state, self.path)], [sleeper.pid])
        sleeper.kill()
        sleeper.wait()
        self.assertTrue(wait_for(lambda: saved_timers(self.state, self.path) == [], timeout=3))  # 30x the heartbeat

    def test_status_keeps_a_later_process_at_a_pid_whose_exit_was_journaled_after_it(self):
        write_state(self.state, self.path, [
            wire(4242, "earlier", time.time() + 600, 9, 100),
            wire(4242, "later", time.time() + 600, 9, 200),
            json.dumps({"record": "drop", "pid": 4242, "start_time": 100}).encode() + b"\n"])
        self.assertEqual([t.scope_id for t in self.saved()], ["later"])

    def test_a_drop_record_never_drops_a_later_process_at_its_pid(self):
        # A worker's exit is journaled after the line that armed a later process at the same pid: the replay
        # must keep that process's timer (here the earlier process is staged by its start time).
        sleeper = self.spawn_sleeper()
        start_time = filetimer._process_start_time(sleeper.pid)
        write_state(self.state, self.path, [
            wire(sleeper.pid, "later", time.time() + 0.3, 9, start_time),
            json.dumps({"record": "drop", "pid": sleeper.pid, "start_time": start_time - 1}).encode() + b"\n"])
        server = FileTimerServer(self.path, state_file=self.state)
        self.addCleanup(server.stop)
        self.assertEqual([t.scope_id for t in server.timers()], ["later"])
        server.start()
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)


class EscalationTest(FiletimerTestCase):
    """Safety rules: kill_after escalates to SIGKILL; exit_on_reap is off unless asked for."""

    IGNORE_TERM = (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "filetimer.configure(filetimer.FileTimerClient(path, signal=signal.SIGTERM))\n"
        "with filetimer.expires(after=0.1):\n    time.sleep(60)\n"
    )

    def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(self):
        self.serve(kill_after=0.3, dump_grace=filetimer._DUMP_GRACE)
        worker = self.spawn_worker(self.IGNORE_TERM)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "escalate worker process" in self.event_names()))
        self.assertEqual(self.event_names(worker.pid), ["timer expired", "dump worker stacks", "kill worker process",
                                                        "escalate worker process"])
        # The worker had its clean-up window: SIGKILL came kill_after (0.3 s) after SIGTERM, not at once.
        self.assertGreaterEqual(self.event_time("escalate worker process") - self.event_time("kill worker process"),
                                0.15)

    def test_without_kill_after_a_worker_ignoring_sigterm_survives(self):
        self.serve()
        worker = self.spawn_worker(self.IGNORE_TERM)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        time.sleep(0.2)
        self.assertIsNone(worker.poll())

    def test_server_survives_reaping_by_default_and_exits_with_exit_on_reap(self):
        paths = {exit_on_reap: os.path.join(self.dir, "%s.fifo" % exit_on_reap) for exit_on_reap in (False, True)}
        servers = {exit_on_reap: self.spawn_server(path, exit_on_reap=exit_on_reap)  # side by side
                   for exit_on_reap, path in paths.items()}
        workers = [self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n", path)
                   for path in paths.values()]
        self.assertEqual([worker.wait(SLACK) for worker in workers], [-signal.SIGKILL] * 2)
        (kept, command), (exited, _) = servers[False], servers[True]
        self.assertEqual(exited.wait(SLACK), -signal.SIGKILL)
        self.assertEqual(command()[0], 1)  # the acquire; the worker died holding it
        self.assertIsNone(kept.poll())


class StackDumpTest(FiletimerTestCase):
    """A hung worker's Python stacks reach its stderr before it is killed."""

    THREADS = textwrap.dedent("""
        import threading
        def parked_in_a_lock():
            threading.Event().wait()
        def parked_in_sleep():
            time.sleep(60)
        for target in (parked_in_a_lock, parked_in_sleep):
            threading.Thread(target=target, daemon=True).start()
        def the_hung_step():
            with filetimer.expires(after=0.2):
                time.sleep(60)
        the_hung_step()
    """)

    def run_hung(self, *cases):
        """Run each case (worker code, server options) side by side, with a server of its own; each worker must
        be killed. Returns [(the worker's stderr, its events)]."""
        workers = []
        for i, (code, options) in enumerate(cases):
            path = os.path.join(self.dir, "hung-%d.fifo" % i)
            self.serve(file_path=path, **dict({"dump_grace": filetimer._DUMP_GRACE}, **options))
            workers.append(self.spawn([*PYTHON, "-c", WORKER + code, path], stderr=subprocess.PIPE, text=True))
        results = []
        for worker in workers:
            _, err = worker.communicate(timeout=SLACK)
            self.assertEqual(worker.returncode, -signal.SIGKILL, err)
            results.append((err, self.event_names(worker.pid)))
        return results

    def test_every_thread_is_dumped_before_the_kill(self):
        [(err, events)] = self.run_hung((self.THREADS, {}))
        for frame in ("parked_in_a_lock", "parked_in_sleep", "the_hung_step"):
            self.assertIn(frame, err)
        self.assertEqual(err.count("hread 0x"), 3, err)  # "Thread 0x..." and "Current thread 0x..."
        self.assertIn("dump worker stacks", events)

    def test_a_hang_in_c_code_holding_the_gil_is_dumped(self):
        [(err, _)] = self.run_hung((
            "import re\ndef backtracking_forever():\n    with filetimer.expires(after=0.3):\n"
            "        re.match(r'(a+)+$', 'a' * 40 + 'b')\nbacktracking_forever()\n", {}))
        self.assertIn("backtracking_forever", err)

    def test_re_arming_during_the_grace_neither_dumps_again_nor_postpones_the_kill(self):
        self.serve(dump_grace=0.3)
        worker = self.spawn_worker("while True:\n    filetimer._configured_client.acquire('late', time.time() - 1)\n"
                                   "    time.sleep(0.001)\n")
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertEqual(self.event_names(worker.pid).count("dump worker stacks"), 1)

    def test_opting_out_on_either_side_kills_without_a_dump(self):
        cases = (("dump_stacks=False", {}), ("", {"dump_grace": 0}))
        results = self.run_hung(*(("filetimer.configure(filetimer.FileTimerClient(path, %s))\n" % client_option
                                   + self.THREADS, server_option) for client_option, server_option in cases))
        for (client_option, server_option), (err, events) in zip(cases, results):
            with self.subTest(client=client_option, server=server_option):
                self.assertNotIn("parked_in_sleep", err)
                self.assertNotIn("dump worker stacks", events)

    def test_a_client_made_after_an_application_handler_leaves_it_in_place(self):
        worker = self.spawn([*PYTHON, "-c", "import os, signal, sys, filetimer\n"
                             "signal.signal(signal.SIGUSR2, lambda *a: print('application handler ran', flush=True))\n"
                             "filetimer.configure(filetimer.FileTimerClient(sys.argv[1]))\n"
                             "os.kill(os.getpid(), signal.SIGUSR2)\nprint('done', flush=True)\n", self.path],
                            stdout=subprocess.PIPE, text=True)
        out, _ = worker.communicate(timeout=SLACK)
        self.assertEqual(worker.returncode, 0, self.read_log(worker))
        self.assertIn("application handler ran", out.splitlines(), self.read_log(worker))

    def test_an_application_handler_of_the_dump_signal_is_left_alone(self):
        # Taken before the configured client is made (it registers nothing) or after (its acquires stop promising
        # a dump).
        handler = "signal.signal(signal.SIGUSR2, lambda *a: print('application handler ran', file=sys.stderr))\n"
        client = "filetimer.configure(filetimer.FileTimerClient(path))\n"
        orders = (handler + client, client + handler)
        for order, (err, events) in zip(orders, self.run_hung(*((order + self.THREADS, {}) for order in orders))):
            with self.subTest(order=order):
                self.assertNotIn("application handler ran", err)
                self.assertNotIn("parked_in_sleep", err)
                self.assertNotIn("dump worker stacks", events)

    def test_a_worker_that_cannot_dump_any_more_is_killed_at_once_with_its_tree(self):
        # It promised a dump when it armed its timer, then exec'd, or set the dump signal back to its default:
        # the dump signal would kill it alone, and leave its children.
        children = "os.execvp('sh', ['sh', '-c', 'sleep 60 & echo $!; sleep 60 & echo $!; wait'])\n"
        workers = {}
        for name, before in (("exec", ""), ("default action", "signal.signal(signal.SIGUSR2, signal.SIG_DFL)\n")):
            path = os.path.join(self.dir, name.replace(" ", "-") + ".fifo")  # side by side, a server each
            self.serve(file_path=path, dump_grace=5)
            workers[name] = self.spawn_worker("filetimer._configured_client.acquire('step', time.time() + 0.3)\n"
                                              + before + children, path, stdout=subprocess.PIPE, text=True)
        trees = {name: [int(worker.stdout.readline()) for _ in range(2)] for name, worker in workers.items()}
        trees = {name: (pids, [filetimer._process_start_time(pid) for pid in pids]) for name, pids in trees.items()}
        for name, worker in workers.items():
            with self.subTest(name):
                pids, start_times = trees[name]
                self.assertNotIn(None, start_times)  # read before the deadline
                self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)  # at once: not 5 s later, not by SIGUSR2
                self.assertNotIn("dump worker stacks", self.event_names(worker.pid))
                self.assert_dead(dict(zip(pids, start_times)))

    def test_the_dump_goes_to_the_stderr_the_worker_had_when_its_client_was_made(self):
        self.serve(dump_grace=filetimer._DUMP_GRACE)
        log = os.path.join(self.dir, "app.log")
        # The application closes its stderr, and a log file it opens gets fd 2.
        worker = self.spawn([*PYTHON, "-c", WORKER + "os.close(2)\ntaken = open(sys.argv[2], 'w')\n"
                             "assert taken.fileno() == 2\nwith filetimer.expires(after=0.1):\n    time.sleep(60)\n",
                             self.path, log])
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertIn("most recent call first", self.read_log(worker))
        with open(log) as f:
            self.assertNotIn("most recent call first", f.read())


@unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
class ProcessTreeTest(FiletimerTestCase):
    """A SIGKILL reap takes the worker's descendants; a catchable signal goes to the worker alone."""

    @staticmethod
    def descendants_of(pid):
        """{pid: start time} of every descendant of pid, from the parents /proc/*/stat names (not filetimer's
        walk)."""
        children = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
        found, todo = {}, [pid]
        while todo:
            for child, start_time in children.get(todo.pop(), ()):
                found[child] = start_time
                todo.append(child)
        return found

    def spawn_tree(self, code, signal_name="KILL"):
        """A worker that runs code (which starts its tree), then hangs; returns (worker, its tree as listed
        before its timer was armed: {pid: start time})."""
        script = ("import subprocess\nfiletimer.configure(filetimer.FileTimerClient(path, signal=signal.SIG%s))\n"
                  % signal_name + code + "print('ready', flush=True)\nsys.stdin.readline()\n"
                  "with filetimer.expires(after=0.1):\n    time.sleep(60)\n")
        worker = self.spawn([*PYTHON, "-c", WORKER + script, self.path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
        self.assertEqual(worker.stdout.readline().strip(), "ready")
        tree = self.descendants_of(worker.pid)
        self.addCleanup(self.kill_leftovers, tree)
        worker.stdin.write("arm\n")
        worker.stdin.flush()
        return worker, tree

    def kill_leftovers(self, tree):
        for pid, start in tree.items():
            if alive(pid, start):
                os.kill(pid, signal.SIGKILL)

    def test_sigkill_takes_children_grandchildren_and_chains(self):
        # The issue's shape: 50 children and 10 chains of 6 descendants, 110 in all.
        chain = os.path.join(self.dir, "chain.sh")
        with open(chain, "w") as f:
            f.write('if [ "$1" -gt 0 ]; then sh "$0" $(($1 - 1)) & else sleep 600 & fi; wait\n')
        self.serve()
        code = ("procs = [subprocess.Popen(['sleep', '600']) for _ in range(50)]\n"
                "procs += [subprocess.Popen(['sh', %r, '4']) for _ in range(10)]\n"
                "def count(pid):\n    return sum(1 + count(c) for c in filetimer._children(pid))\n"
                "while count(os.getpid()) < 110:\n    time.sleep(0.01)\n" % chain)
        worker, tree = self.spawn_tree(code)
        self.assertEqual(len(tree), 110)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assert_dead(tree)

    def test_without_children_files_the_walk_scans_proc_and_still_takes_the_whole_tree(self):
        # /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN, off in many kernels' default configuration:
        # without it the walk finds each process's children by reading every process's parent in /proc.
        with mock.patch.object(filetimer, "_HAVE_PROC_CHILDREN", False):
            self.serve()
            worker, tree = self.spawn_tree(
                "shells = [subprocess.Popen(['sh', '-c', 'sleep 600 & echo $!; sleep 600 & echo $!; wait'],"
                " stdout=subprocess.PIPE) for _ in range(2)]\n"
                "for shell in shells:\n    shell.stdout.readline()\n    shell.stdout.readline()\n")
            self.assertEqual(len(tree), 6)  # two children, four grandchildren
            self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
            self.assert_dead(tree)

    def test_a_catchable_signal_leaves_the_children_to_the_worker(self):
        self.serve()
        worker, tree = self.spawn_tree("child = subprocess.Popen(['sleep', '600'])\n", signal_name="TERM")
        self.assertEqual(worker.wait(SLACK), -signal.SIGTERM)
        time.sleep(0.1)
        self.assertEqual([alive(pid, start) for pid, start in tree.items()], [True])

    def test_kill_tree_false_kills_the_worker_alone(self):
        self.serve(kill_tree=False)
        worker, tree = self.spawn_tree("child = subprocess.Popen(['sleep', '600'])\n")
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        time.sleep(0.1)
        self.assertEqual([alive(pid, start) for pid, start in tree.items()], [True])

    def test_a_tree_that_keeps_forking_during_the_kill_leaves_nothing(self):
        self.serve()
        marker = "600.%d" % os.getpid()
        self.addCleanup(kill_marked, marker)  # only if the test fails: they are all ours
        # Three shells that never stop forking (each child is killed by the next turn, so they do not pile up).
        loop = "i=0; while [ $i -lt 20000 ]; do sleep %s & kill $!; i=$((i+1)); done" % marker
        code = "spawners = [subprocess.Popen(['sh', '-c', %r]) for _ in range(3)]\ntime.sleep(0.2)\n" % loop
        worker, _ = self.spawn_tree(code)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not marked(marker)), marked(marker))

    def test_a_child_whose_fork_completes_after_its_parent_was_listed_is_killed(self):
        # A fork under way when SIGSTOP arrives still completes: the child shows up in its parent's list only
        # after the parent was listed. Here the worker's child is listed too early once, and misses its own.
        server = self.serve()
        fork = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\ntime.sleep(60)\n"
        worker = self.spawn([*PYTHON, "-c", "import subprocess, sys, time\n"
                             "subprocess.Popen([sys.executable, '-c', sys.argv[1]])\ntime.sleep(60)\n", fork])
        self.assertTrue(wait_for(lambda: len(self.descendants_of(worker.pid)) == 2))
        tree = self.descendants_of(worker.pid)
        self.addCleanup(self.kill_leftovers, tree)
        middle, = filetimer._children(worker.pid)
        listed = []
        real_children = filetimer._children

        def children(pid):
            listed.append(pid)
            return [] if pid == middle and listed.count(pid) == 1 else real_children(pid)

        handle = filetimer._Worker.attach(worker.pid, None)
        self.addCleanup(handle.close)
        with mock.patch.object(filetimer, "_children", children):
            self.assertEqual(server._reaper.kill_process_tree(handle), 2)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assert_dead(tree)

    def test_the_walk_waits_until_every_thread_has_stopped(self):
        # A thread still forking when SIGSTOP arrives runs on (state R) until its fork is done; only then is the
        # child in the list. Here the worker's second thread reads as running three times, and the child is
        # listed only after that: a walk that listed children before every thread had stopped would miss it.
        server = self.serve()
        worker = self.spawn([*PYTHON, "-c", "import subprocess, sys, threading, time\n"
                             "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                             "subprocess.Popen([sys.executable, '-S', '-c', 'import time; time.sleep(60)'])\n"
                             "time.sleep(60)\n"])
        self.assertTrue(wait_for(lambda: len(self.descendants_of(worker.pid)) == 1))
        tree = self.descendants_of(worker.pid)
        self.addCleanup(self.kill_leftovers, tree)
        second, = (int(tid) for tid in os.listdir("/proc/%d/task" % worker.pid) if int(tid) != worker.pid)
        running_reads = []
        real_read, real_children = filetimer._read_proc, filetimer._children

        def read_proc(path):
            data = real_read(path)
            if path == "/proc/%d/task/%d/stat" % (worker.pid, second) and len(running_reads) < 3:
                running_reads.append(path)
                state = data.rindex(b")") + 2
                data = data[:state] + b"R" + data[state + 1 :]
            return data

        def children(pid):
            return [] if pid == worker.pid and len(running_reads) < 3 else real_children(pid)

        handle = filetimer._Worker.attach(worker.pid, None)
        self.addCleanup(handle.close)
        with mock.patch.object(filetimer, "_read_proc", read_proc), mock.patch.object(filetimer, "_children", children):
            self.assertEqual(server._reaper.kill_process_tree(handle), 1)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assert_dead(tree)

    def test_the_server_and_its_ancestors_are_never_part_of_a_tree(self):
        # The worker is the grandparent of a server process: the server's parent and the server are in the worker's
        # tree, and the kill takes the worker alone. The server shares the worker's stdin and stdout.
        run = "import subprocess, sys, time\nsubprocess.Popen(sys.argv[1:])\ntime.sleep(60)\n"
        wait = "import subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n"
        worker = self.spawn([*PYTHON, "-c", run, *PYTHON, "-c", wait, *PYTHON, "-c", SERVER, self.path, "{}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(kill_group, worker.pid)  # the server and its parent outlive the worker
        self.assertEqual(worker.stdout.readline().strip(), "ready")
        parent, = filetimer._children(worker.pid)
        server, = filetimer._children(parent)
        starts = {pid: filetimer._process_start_time(pid) for pid in (parent, server)}
        with FileTimerClient(self.path) as client:
            client._send_line(FileTimerRequest(worker.pid, "hang", time.time() + 0.2, signal.SIGKILL)._line())
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        worker.stdin.write("count\n")
        worker.stdin.flush()
        self.assertEqual(json.loads(worker.stdout.readline()), [1, 0, 0])  # the server serves on
        for pid, start in starts.items():  # neither stopped nor killed
            self.assertTrue(alive(pid, start), pid)
            self.assertNotIn(state(pid), ("T", "t"))

    def test_a_pid_reused_during_the_walk_is_left_alone(self):
        # /proc listed a child of the worker, but by the time the walk binds to it the pid belongs to a process with
        # another parent: here a sleeper of this test's, listed by a mocked _children.
        server = self.serve()
        worker, other = self.spawn_sleeper(), self.spawn_sleeper()
        real_children = filetimer._children
        handle = filetimer._Worker.attach(worker.pid, None)
        self.addCleanup(handle.close)
        with mock.patch.object(filetimer, "_children",
                               lambda pid: real_children(pid) + ([other.pid] if pid == worker.pid else [])):
            self.assertEqual(server._reaper.kill_process_tree(handle), 0)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertNotIn(state(other.pid), ("T", "t"))  # not even stopped
        with self.assertRaises(subprocess.TimeoutExpired):  # nor killed
            other.wait(0.2)

    def test_a_hung_shell_script_leaves_no_orphan(self):
        self.serve()
        marker = "600.%d1" % os.getpid()
        self.addCleanup(kill_marked, marker)
        script = self.spawn(["sh", "-c", "%s -S -m filetimer acquire --scope step --after 0.3 --path %s && sleep %s"
                             % (sys.executable, self.path, marker)])
        self.assertEqual(script.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not marked(marker)), marked(marker))


class ExpiresShapesTest(FiletimerTestCase):
    """Every shape of worker is guarded: async, threads, forks, nesting, progress, no server."""

    def test_async_def_and_async_with_are_guarded(self):
        self.serve()
        self.assert_killed(
            "import asyncio\n@filetimer.expires(after=0.1)\nasync def step():\n    time.sleep(60)\n"
            "asyncio.run(step())\n",
            "import asyncio\nasync def step():\n    async with filetimer.expires(after=0.1):\n        time.sleep(60)\n"
            "asyncio.run(step())\n",
        )

    def test_two_tasks_on_one_line_get_two_timers(self):
        # A sibling task that keeps finishing steps on the same line must not keep the hung task's timer re-armed.
        self.serve()
        self.assert_killed(
            "import asyncio\n@filetimer.expires(after=0.3)\nasync def step(seconds):\n"
            "    await asyncio.sleep(seconds)\n"
            "async def sibling():\n    end = time.monotonic() + 3\n    while time.monotonic() < end:\n"
            "        await step(0.01)\n    os._exit(0)\n"
            "async def main():\n    await asyncio.gather(step(60), sibling())\n"
            "asyncio.run(main())\n"
        )

    def test_an_exit_in_another_task_or_thread_releases_the_scope_that_was_entered(self):
        server = self.serve()
        worker = self.spawn_lingering_worker(
            "import asyncio, gc, threading\n"
            "async def ticks():\n"
            "    async with filetimer.expires(after=0.3):\n"
            "        yield 1\n"
            "        yield 2\n"
            "async def main():\n"
            "    agen = ticks()\n"
            "    await agen.__anext__()\n"
            "    del agen  # abandoned: the loop closes it in a task of its own\n"
            "    gc.collect()\n"
            "    await asyncio.sleep(0.05)\n"
            "asyncio.run(main())\n"
            "block = filetimer.expires(after=0.3, scope='handed over')\n"
            "block.__enter__()\n"
            "threading.Thread(target=block.__exit__, args=(None, None, None)).start()\n")
        self.assertEqual(worker.stdout.readline().strip(), "done")
        self.assertTrue(wait_for(lambda: server.request_count == 4 and server.timers() == []))
        time.sleep(0.45)  # past both deadlines
        self.assertIsNone(worker.poll())

    def test_after_must_be_positive_and_finite(self):
        for after in (-1, 0, float("inf"), float("nan"), None, "5", True):
            with self.subTest(after=after), self.assertRaises(ValueError) as caught:
                filetimer.expires(after=after)
            self.assertIn("after", str(caught.exception))
        timer = filetimer._Timer(mock.Mock(), "s", 1.0, {})
        self.assertRaises(ValueError, timer.reset, -1)

    def test_an_async_function_that_finishes_is_released(self):
        server = self.serve()
        worker = self.spawn_worker(
            "import asyncio\n@filetimer.expires(after=0.2)\nasync def step():\n    await asyncio.sleep(0.01)\n"
            "    return 7\nassert asyncio.run(step()) == 7\ntime.sleep(0.3)\n"
        )
        self.assertEqual(worker.wait(SLACK), 0)
        self.assertTrue(wait_for(lambda: server.request_count == 2), server.request_count)

    def test_generator_functions_are_refused(self):
        def numbers():
            yield 1

        async def agen():
            yield 1

        for func in (numbers, agen):
            with self.subTest(func=func.__name__), self.assertRaises(TypeError) as caught:
                filetimer.expires(after=1)(func)
            self.assertIn("loop body", str(caught.exception))

    def test_two_threads_on_one_line_get_two_timers(self):
        self.serve()
        self.assert_killed(
            "import threading\ndef step(seconds):\n    with filetimer.expires(after=0.3):\n"
            "        time.sleep(seconds)\n"
            "hung = threading.Thread(target=step, args=(60,), daemon=True)\nhung.start()\n"
            "time.sleep(0.05)\nstep(0.01)\ntime.sleep(60)\n"
        )

    def test_threads_not_started_by_threading_leave_nothing_behind(self):
        # A C library's thread (here _thread's) must not leave a dummy Thread object per use (3.8-3.12 keep them).
        server = self.serve()
        before = len(threading.enumerate())
        done = threading.Semaphore(0)

        def step():
            with filetimer.expires(after=30, client=client):
                pass
            done.release()

        with FileTimerClient(self.path, keep_open=True) as client:
            for _ in range(20):
                _thread.start_new_thread(step, ())
            for _ in range(20):
                self.assertTrue(done.acquire(timeout=SLACK))
        self.assertTrue(wait_for(lambda: server.request_count == 40))
        self.assertEqual(server.timers(), [])
        self.assertEqual(len(threading.enumerate()), before)

    def test_an_enclosing_block_of_the_same_scope_is_guarded_after_the_inner_exit(self):
        self.serve()
        self.assert_killed(*("def f(n):\n    with filetimer.expires(after=0.3, scope=%s):\n        if n:\n"
                             "            f(n - 1)\n            time.sleep(60)\nf(1)\n" % scope
                             for scope in ("None", "'explicit'")))

    def test_recursion_spares_what_torch_spares_and_kills_what_it_kills(self):
        # torch's test_get_timer_recursive, with 6x and 4x its times: each level is quick, the whole is not.
        server = self.serve()
        spared = self.spawn_worker(
            "def f(n):\n    if n:\n        with filetimer.expires(after=0.6):\n            f(n - 1)\n"
            "            time.sleep(0.2)\nf(3)\n"
        )
        self.assert_killed(
            "def f(n):\n    if n:\n        with filetimer.expires(after=0.3):\n            f(n - 1)\n"
            "            time.sleep(3)\nf(4)\n"
        )
        self.assertEqual(spared.wait(SLACK), 0)
        self.assertTrue(wait_for(lambda: [t.worker_pid for t in server.timers()] == []))

    def test_reset_is_a_progress_watchdog(self):
        server = self.serve()
        progress = self.spawn_worker(
            "with filetimer.expires(after=0.3) as timer:\n    for _ in range(5):\n        time.sleep(0.075)\n"
            "        timer.reset()\n    timer.reset(after=30)\n    time.sleep(0.4)\n"
        )
        self.assert_killed("with filetimer.expires(after=60) as timer:\n    timer.reset(after=0.1)\n"
                           "    time.sleep(60)\n")  # side by side with the one that makes progress
        self.assertEqual(progress.wait(SLACK), 0)
        # The hung worker's two requests, then the progress one's acquire, 5 resets, 1 reset and its release.
        self.assertTrue(wait_for(lambda: server.request_count == 2 + 1 + 5 + 1 + 1), server.request_count)

    def test_release_without_a_server_is_quiet_and_acquire_raises(self):
        server, command = self.spawn_server()
        worker = self.spawn(
            [*PYTHON, "-c", "import os, signal, sys, time, filetimer\npath = sys.argv[1]\n"
             "filetimer.configure(filetimer.FileTimerClient(path, connect_timeout=0.2))\n"
             "with filetimer.expires(after=30):\n    sys.stdin.readline()\nprint('released', flush=True)\n"
             "try:\n    filetimer._configured_client.acquire('again', time.time() + 30)\n"
             "except BrokenPipeError:\n    print('unguarded', flush=True)\n", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertTrue(wait_for(lambda: command()[2] == 1))  # armed
        server.kill()
        server.wait()
        out, err = worker.communicate("go\n", timeout=SLACK)
        self.assertEqual((worker.returncode, out.split()), (0, ["released", "unguarded"]), err)
        self.assertNotIn("Traceback", err)

    FORKS = textwrap.dedent("""
        import threading
        keep_open = sys.argv[2] == "keep_open"
        client = filetimer.FileTimerClient(path, keep_open=keep_open, dump_stacks=False)
        stop = False
        def hammer():
            while not stop:
                client.acquire("hammer", time.time() + 600)
                client.release("hammer")
        thread = threading.Thread(target=hammer)
        thread.start()
        hung = 0
        for i in range(100):
            pid = os.fork()
            if pid == 0:
                signal.alarm(3)  # a child stuck on an inherited lock dies of SIGALRM
                client.acquire("child", time.time() + 600)
                client.release("child")
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            hung += status != 0
            if hung == 3:
                break
        stop = True
        thread.join()
        print(hung, flush=True)
    """)

    def test_forks_under_a_hammering_thread_leave_no_child_hung(self):
        # 100 forks with each kind of client; on a client without fork safety most children hang.
        server = self.serve()
        workers = {mode: self.spawn([*PYTHON, "-c", "import os, signal, sys, time, filetimer\npath = sys.argv[1]\n"
                                     + self.FORKS, self.path, mode], stdout=subprocess.PIPE, text=True)
                   for mode in ("default", "keep_open")}  # side by side
        for mode, worker in workers.items():
            with self.subTest(mode=mode):
                out, _ = worker.communicate(timeout=SLACK * 6)
                self.assertEqual((worker.returncode, out.strip()), (0, "0"))
        self.assertEqual(server.rejected_count, 0)

    def test_a_child_forked_inside_a_block_on_another_thread_leaves_it_cleanly(self):
        # The child's copy of the thread is its main thread, yet its blocks must still find their timers.
        # The child's exit releases the child's own (unarmed) scope: its parent, still inside, stays guarded.
        server = self.serve()
        worker = self.spawn_worker(
            "import threading\ndef step():\n    with filetimer.expires(after=30):\n        pid = os.fork()\n"
            "        if pid:\n            print('child exit status', os.waitpid(pid, 0)[1], flush=True)\n"
            "            sys.stdin.readline()\n"
            "    if pid == 0:\n        print('child left the block', flush=True)\n        os._exit(0)\n"
            "thread = threading.Thread(target=step)\nthread.start()\nthread.join()\n",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual([worker.stdout.readline() for _ in range(2)],
                         ["child left the block\n", "child exit status 0\n"], self.read_log(worker))
        self.assertTrue(wait_for(lambda: server.request_count == 2))  # the parent's acquire, the child's release
        self.assertEqual([t.worker_pid for t in server.timers()], [worker.pid])
        out, _ = worker.communicate("leave\n", timeout=SLACK)
        self.assertEqual((worker.returncode, out), (0, ""), self.read_log(worker))
        self.assertTrue(wait_for(lambda: server.request_count == 3))  # and the parent's release
        self.assertEqual(server.timers(), [])

    def test_a_forked_child_is_killed_for_its_own_hang_not_its_parent(self):
        self.serve()
        worker = self.spawn_worker(
            "filetimer._configured_client.release('before the fork')\npid = os.fork()\nif pid == 0:\n"
            "    with filetimer.expires(after=0.2):\n        time.sleep(60)\n"
            "print(os.waitpid(pid, 0)[1] & 0x7f, flush=True)\n", stdout=subprocess.PIPE, text=True)
        out, _ = worker.communicate(timeout=SLACK)
        self.assertEqual((worker.returncode, out.strip()), (0, str(int(signal.SIGKILL))), self.read_log(worker))


class CommandLineTest(FiletimerTestCase):
    """The command line guards shell scripts and make recipes; each error is one line with an exact exit status."""

    def test_serve_kills_a_hung_worker_and_stops_cleanly_on_sigterm_and_sigint(self):
        stops = {stop_signal: os.path.join(self.dir, "%d.fifo" % stop_signal)  # side by side
                 for stop_signal in (signal.SIGTERM, signal.SIGINT)}
        servers = {stop_signal: self.start_cli(path, "--max-interval", "5") for stop_signal, path in stops.items()}
        workers = {stop_signal: self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n", path)
                   for stop_signal, path in stops.items()}
        for stop_signal, server in servers.items():
            with self.subTest(signal=stop_signal):
                self.assertEqual(workers[stop_signal].wait(SLACK), -signal.SIGKILL)
                server.send_signal(stop_signal)
                self.assertEqual(server.wait(SLACK), 0)
                self.assertFalse(os.path.exists(stops[stop_signal]))
                self.assertIn("kill worker process", server.stderr.read())

    def test_serve_json_events(self):
        server = self.spawn([*PYTHON, "-m", "filetimer", "serve", self.path, "--events", "json",
                             "--run-id", "r1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started = json.loads(server.stdout.readline())
        self.assertEqual((started["event"], started["run_id"]), ("watchdog started", "r1"))
        worker = self.spawn_worker("with filetimer.expires(after=0.1, scope='step'):\n    time.sleep(60)\n")
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        expired = json.loads(server.stdout.readline())
        self.assertEqual((expired["event"], expired["pid"], expired["scope"], expired["signal"]),
                         ("timer expired", worker.pid, "step", 9))
        server.terminate()
        self.assertEqual(server.wait(SLACK), 0)

    def test_bad_invocations_exit_2_with_one_line(self):
        regular = os.path.join(self.dir, "regular")
        with open(regular, "w") as f:
            f.write("keep me")
        live = FileTimerServer(self.path)
        self.addCleanup(live.stop)
        cases = {
            "bad number": ["serve", os.path.join(self.dir, "a"), "--max-interval", "-1"],
            "bad mode": ["serve", os.path.join(self.dir, "a"), "--mode", "999"],
            "unknown option": ["serve", "--frobnicate"],
            "no command": [],
            "missing directory": ["serve", os.path.join(self.dir, "no", "such", "fifo")],
            "regular file": ["serve", regular],
            "live server": ["serve", self.path],
        }
        for name, args in cases.items():
            with self.subTest(name):
                result = cli(*args, real=name in ("missing directory", "regular file", "live server"))
                self.assertEqual(result.returncode, 2)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn("Traceback", result.stderr)
        with open(regular) as f:
            self.assertEqual(f.read(), "keep me")

    def test_signal_option_takes_signals_only(self):
        # A name that is a handler, a mask operation or a real-time signal would silently mean "report only" or
        # some other number: refused, however it is spelled.
        for text, number in (("TERM", signal.SIGTERM), ("SIGTERM", signal.SIGTERM), ("sigkill", signal.SIGKILL),
                             ("usr1", signal.SIGUSR1), ("15", 15), ("0", 0)):
            with self.subTest(text=text):
                self.assertEqual(filetimer._signal_number(text), number)
        for text in ("SIG_DFL", "sig_ign", "_DFL", "SIG_BLOCK", "SIG_SETMASK", "SIGRTMIN", "sigrtmax", "RTMIN",
                     "NSIG", "65", "-1", "NOPE", ""):
            with self.subTest(text=text), self.assertRaises(argparse.ArgumentTypeError):
                filetimer._signal_number(text)

    def test_status_after_a_server_crash_is_not_serving_and_shows_no_timers(self):
        server = self.start_cli(self.path)
        sleeper = self.spawn_sleeper()
        acquired = cli("acquire", "--scope", "train", "--after", "100", "--pid", str(sleeper.pid),
                                "--path", self.path)
        self.assertEqual(acquired.returncode, 0, acquired.stderr)
        self.assertTrue(wait_for(lambda: "1 active timer" in cli("status", self.path).stdout))
        server.kill()  # a crash: the FIFO is left behind, and nobody reads it
        server.wait()
        self.assertTrue(os.path.exists(self.path))
        crashed = cli("status", self.path)
        self.assertEqual(crashed.returncode, 1, crashed.stdout)
        self.assertNotIn("train", crashed.stdout)
        listing = json.loads(cli("status", "--json", self.path).stdout)
        self.assertEqual((listing["serving"], listing["timers"]), (False, []))

    def test_help_and_version(self):
        self.assertIn("serve", cli("--help").stdout)
        self.assertIn("--kill-after", cli("serve", "--help").stdout)
        self.assertEqual(cli("--version", real=True).stdout.strip(), "filetimer " + filetimer.__version__)

    def shell(self, script, shell="sh", **kwargs):
        """Run script in shell, FT standing for the command line and PATH_ for the FIFO."""
        command = "%s -S -m filetimer" % sys.executable
        # In a session of its own: the children the killed shell leaves behind (its sleep 60) go with its group.
        child = self.spawn([shell, "-c", script.replace("FT", command).replace("PATH_", self.path)],
                           start_new_session=True, **kwargs)
        self.addCleanup(kill_group, child.pid)  # the group outlives the shell while its children live
        return child

    def test_the_readmes_term_recipe_stops_a_hung_step_under_bash_and_dash(self):
        self.serve()
        recipe = ("FT acquire --scope upload --after 0.3 --signal TERM --path PATH_\n"
                  "sleep 60 & step=$!\necho $step\n"
                  "trap 'kill \"$step\" 2>/dev/null; exit 143' TERM\nwait \"$step\"\n"
                  "FT release --scope upload --path PATH_\n")
        scripts = {shell: self.shell(recipe, shell, stdout=subprocess.PIPE, text=True)  # side by side
                   for shell in ("bash", "dash") if shutil.which(shell)}
        for shell, script in scripts.items():
            with self.subTest(shell):
                step = int(script.stdout.readline())
                start_time = filetimer._process_start_time(step)
                self.assertEqual(script.wait(SLACK), 143)  # the trap ran: at the deadline, not after the step
                self.assert_dead({step: start_time})

    def test_a_hung_guarded_shell_script_is_killed(self):
        self.serve()
        script = self.shell("FT acquire --scope step --after 0.1 --path PATH_ && sleep 60")
        self.assertEqual(script.wait(SLACK), -signal.SIGKILL)
        self.assertIn(("kill worker process", script.pid),
                      [(name, r.worker_pid) for name, r in self.events if r])

    def test_a_shell_script_that_releases_in_time_is_not_killed(self):
        server = self.serve()
        script = self.shell("FT acquire --scope step --after 5 --signal TERM --path PATH_ && sleep 0.1 && "
                            "FT release --scope step --path PATH_")
        self.assertEqual(script.wait(SLACK), 0)
        self.assertTrue(wait_for(lambda: server.request_count == 2))
        self.assertEqual(server.timers(), [])

    def test_pid_and_signal_options(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        for spelling in ("TERM", "SIGTERM", "sigterm", "15"):
            with self.subTest(signal=spelling):
                result = cli("acquire", "--scope", spelling, "--after", "60", "--signal", spelling,
                             "--pid", str(sleeper.pid), "--path", self.path)
                self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(wait_for(lambda: len(server.timers()) == 4))
        self.assertEqual({(t.worker_pid, t.signal) for t in server.timers()}, {(sleeper.pid, signal.SIGTERM)})

    def test_bad_acquire_and_release_exit_with_one_line(self):
        self.serve()
        cases = {
            "unknown signal": (2, ["acquire", "--scope", "s", "--after", "1", "--signal", "NOPE"]),
            "negative after": (2, ["acquire", "--scope", "s", "--after", "-1"]),
            "missing scope": (2, ["release"]),
            "forbidden pid": (2, ["release", "--scope", "s", "--pid", "1"]),
            "no such process": (2, ["release", "--scope", "s", "--pid", str(2**22 + 1)]),
            "missing FIFO": (2, ["acquire", "--scope", "s", "--after", "1", "--path", os.path.join(self.dir, "none"),
                                 "--connect-timeout", "0"]),
        }
        for name, (status, args) in cases.items():
            with self.subTest(name):
                if "--path" not in args:
                    args = [*args, "--path", self.path]
                # Refused while parsing: in this process; the others from a real one.
                result = cli(*args, real=name in ("no such process", "missing FIFO"))
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn("Traceback", result.stderr)

    def test_run_passes_the_exit_status_through(self):
        server = self.serve()
        result = cli("run", "--after", "5", "--path", self.path, "--", "sh", "-c", "echo out; exit 7")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (7, "out\n", ""))
        self.assertTrue(wait_for(lambda: server.request_count == 1 and server.timers() == []))

    def test_run_in_a_recipe_line_kills_the_hung_command_and_its_tree(self):
        self.serve()
        # As make runs a recipe line: sh -c; the command is the shell that run became, with a child.
        recipe = self.spawn(["sh", "-c", "%s -S -m filetimer run --after 0.3 --path %s -- sh -c 'sleep 60 & "
                             "echo $!; sleep 60'" % (sys.executable, self.path)], stdout=subprocess.PIPE, text=True)
        child = int(recipe.stdout.readline())
        start_time = filetimer._process_start_time(child)
        self.assertEqual(recipe.wait(SLACK), 128 + signal.SIGKILL)  # the recipe fails: make stops
        self.assertEqual(self.event_names(), ["watchdog started", "timer expired", "kill worker process"])
        self.assert_dead({child: start_time})

    def test_run_without_a_server_or_with_bad_arguments_does_not_run_the_command(self):
        marker = os.path.join(self.dir, "ran")
        no_wait = ["--path", self.path, "--connect-timeout", "0"]
        for args, status in ((["--after", "5", *no_wait], 125),  # no server
                             (["--after", "-1"], 125),  # refused while parsing: in this process
                             (["--after", "5", "--unguarded-ok", *no_wait], 0),
                             (["--after", "5", "--unguarded-ok", *no_wait, "--", "/nonexistent"], 127)):
            with self.subTest(args=args):
                command = [] if "/nonexistent" in args else ["--", "touch", marker]
                lines = 2 if not command else 1
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)
                result = cli("run", *args, *command, real="-1" not in args)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), lines, result.stderr)
                self.assertEqual(os.path.exists(marker), status == 0)
                if status == 0:
                    self.assertIn("unguarded", result.stderr)
        self.assertEqual(cli("run", "--after", "5", real=False).returncode, 125)  # no command

    def test_errors_name_their_path_and_exit_codes_are_exact(self):
        regular = os.path.join(self.dir, "regular")
        with open(regular, "w") as f:
            f.write("x")
        stale = os.path.join(self.dir, "stale.fifo")
        os.mkfifo(stale)
        missing_dir = os.path.join(self.dir, "no", "such", "x.fifo")
        cases = [
            (["serve", missing_dir], 2, os.path.dirname(os.path.dirname(missing_dir))),
            (["acquire", "--scope", "s", "--after", "1", "--path", missing_dir, "--connect-timeout", "0"], 2,
             missing_dir),
            (["acquire", "--scope", "s", "--after", "1", "--path", regular], 2, regular),
            (["acquire", "--scope", "s", "--after", "1", "--path", stale, "--connect-timeout", "0"], 3, stale),
            (["release", "--scope", "s", "--path", stale, "--connect-timeout", "0"], 3, stale),
        ]
        for args, status, named in cases:
            with self.subTest(args=args):
                result = cli(*args)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertIn(named, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        stale_runtime = cli("serve", env=dict(ENV, XDG_RUNTIME_DIR=os.path.join(self.dir, "gone"), FILETIMER_PATH=""))
        self.assertEqual(stale_runtime.returncode, 2)
        self.assertIn(os.path.join(self.dir, "gone"), stale_runtime.stderr)

    def test_acquire_from_a_terminal_warns_that_it_arms_the_login_shell(self):
        self.serve()
        main, secondary = os.openpty()
        self.addCleanup(os.close, main)
        with open(secondary) as terminal:
            result = subprocess.run([*PYTHON, "-m", "filetimer", "acquire", "--scope", "s", "--after", "600",
                                     "--path", self.path], stdin=terminal, env=ENV, capture_output=True, text=True,
                                    timeout=SLACK)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("warning", result.stderr)
        self.assertIn("shell", result.stderr)
        piped = cli("release", "--scope", "s", "--path", self.path, stdin=subprocess.DEVNULL)
        self.assertEqual((piped.returncode, piped.stderr), (0, ""))

    def test_status_prints_any_scope_and_any_deadline(self):
        state = self.path + ".state"
        server = self.serve(state_file=state)
        sleeper = self.spawn_sleeper()
        write_raw(self.path, b'{"version": 1, "pid": %d, "scope_id": "odd \\ud800", "expiration_time": 1e300, '
                             b'"signal": 9}\n' % sleeper.pid)
        self.assertTrue(wait_for(lambda: server.request_count == 1))
        result = cli("status", self.path)
        self.assertEqual(result.returncode, 0, result.stderr)
        row = result.stdout.splitlines()[-1]
        self.assertIn("odd \\ud800", row)
        self.assertIn("1e+300", row)
        self.assertLess(len(row), 80)

    def test_status_tells_a_running_server_from_a_stopped_one(self):
        server = self.start_cli(self.path, "--max-interval", "0.1")
        self.assertTrue(wait_for(lambda: cli("status", self.path).returncode == 0))
        running = cli("status", self.path)
        self.assertIn("0 active timers", running.stdout)
        sleeper = self.spawn_sleeper()
        acquired = cli("acquire", "--scope", "train", "--after", "100", "--signal", "TERM", "--pid", str(sleeper.pid),
                       "--path", self.path)
        self.assertEqual(acquired.returncode, 0, acquired.stderr)
        self.assertTrue(wait_for(lambda: "1 active timer" in cli("status", self.path).stdout))
        row = cli("status", self.path).stdout.splitlines()[-1].split()
        self.assertEqual((row[0], row[1], row[3]), (str(sleeper.pid), "train", "SIGTERM"))
        listing = json.loads(cli("status", "--json", self.path).stdout)
        self.assertEqual((listing["serving"], listing["timers"][0]["scope"]), (True, "train"))
        server.send_signal(signal.SIGHUP)
        self.assertEqual(server.wait(SLACK), 0)
        self.assertFalse(os.path.exists(self.path))
        stopped = cli("status", self.path)
        self.assertEqual(stopped.returncode, 1)
        self.assertIn("no server is serving %s; last known state written" % self.path, stopped.stdout)
        self.assertNotIn("train", stopped.stdout)
        self.assertEqual(json.loads(cli("status", "--json", self.path).stdout)["timers"], [])
        self.assertEqual(cli("status", os.path.join(self.dir, "never.fifo")).returncode, 1)
        not_a_fifo = cli("status", self.path + ".state")  # a regular file is never "being served"
        self.assertEqual(not_a_fifo.returncode, 2)
        self.assertIn("not a FIFO", not_a_fifo.stderr)

    def test_no_state_and_the_start_up_line_once(self):
        server = self.start_cli(self.path, "--max-interval", "0.1", "--no-state")
        server.terminate()
        out, err = server.communicate(timeout=SLACK)
        self.assertEqual(server.returncode, 0)
        self.assertNotIn("serving", out + err)  # the first line was read by start_cli
        self.assertEqual(os.listdir(self.dir), [])


@unittest.skipUnless(importlib.util.find_spec("torch"), "torch is not installed")
class TorchInteropTest(FiletimerTestCase):
    """Same wire format both ways: torch's client with our server, our client with torch's server."""

    def test_torch_worker_is_killed_by_our_server(self):
        self.serve()
        worker = self.spawn([sys.executable, "-c", TORCH_WORKER, self.path])
        self.assertEqual(worker.wait(SLACK * 3), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names(worker.pid)))

    def start_torch_server(self):
        # torch's server SIGKILLs its own process after reaping, so it runs in a child.
        server = self.spawn([sys.executable, "-c", TORCH_SERVER, self.path], stdout=subprocess.PIPE, text=True)
        self.assertEqual(server.stdout.readline().strip(), "ready")
        return server

    def test_our_worker_with_default_arguments_is_killed_by_torch_server(self):
        # torch's server checks deadlines only when its pipe reaches end-of-file: a client
        # holding the FIFO open would freeze it. Ours closes after each request by default.
        self.start_torch_server()
        worker = self.spawn_worker("with filetimer.expires(after=0.2):\n    time.sleep(60)\n")
        self.assertEqual(worker.wait(SLACK * 3), -signal.SIGKILL)

    def test_torch_server_still_reaps_other_workers_while_ours_are_connected(self):
        self.start_torch_server()
        ours = self.spawn_lingering_worker("filetimer._configured_client.acquire('long', time.time() + 600)\n")
        self.assertEqual(ours.stdout.readline().strip(), "done")
        theirs = self.spawn([sys.executable, "-c", TORCH_WORKER, self.path])
        self.assertEqual(theirs.wait(SLACK * 3), -signal.SIGKILL)
        self.assertIsNone(ours.poll())


class ReadmeTest(FiletimerTestCase):
    """The README's Python samples run as written, and every test class its Guarantees name exists."""

    def samples(self):
        with open(os.path.join(HERE, "README.md")) as f:
            text = f.read()
        return [textwrap.dedent(body) for body in re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S)
                for body in [body[1]]]

    def test_every_test_class_the_guarantees_name_exists(self):
        with open(os.path.join(HERE, "README.md")) as f:
            named = set(re.findall(r"`(\w+Test)`", f.read()))
        self.assertGreaterEqual(len(named), 10)
        self.assertEqual(sorted(name for name in named if not isinstance(globals().get(name), type)), [])

    def test_every_python_sample_compiles_and_the_worker_and_supervisor_samples_run(self):
        samples = self.samples()
        self.assertGreaterEqual(len(samples), 3)
        for sample in samples:
            compile(sample, "README.md", "exec")  # a SyntaxError names the sample
        worker = next(s for s in samples if "def save_checkpoint" in s)
        supervisor = next(s for s in samples if "run_and_wait_for_workers()" in s)
        stubs = ("import asyncio\ndef train_step(): pass\ndef train_on(batch): pass\nloader = [1, 2]\n"
                 "async def all_reduce(): pass\ndef run_and_wait_for_workers(): pass\n")
        server = self.serve()
        for sample, path in ((worker, self.path), (supervisor, os.path.join(self.dir, "supervisor.fifo"))):
            child = self.spawn([*PYTHON, "-c", stubs + sample + "\nprint('ran', flush=True)\n"],
                               env=dict(ENV, FILETIMER_PATH=path), stdout=subprocess.PIPE, text=True)
            out, _ = child.communicate(timeout=SLACK)
            self.assertEqual((child.returncode, out.splitlines()[-1]), (0, "ran"), self.read_log(child))
        self.assertTrue(wait_for(lambda: server.request_count == 6 and server.timers() == []))


if __name__ == "__main__":
    unittest.main()
