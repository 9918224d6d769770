"""Tests for filetimer: real processes, real FIFOs, real signals.

Run with ``python -m unittest -v``. No test asserts a tight time: waits are
generous and timing figures live in benchmarks/.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

import filetimer
from filetimer import FileTimerClient, FileTimerRequest, FileTimerServer

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
SLACK = 10.0  # seconds: an upper bound for things that take milliseconds

# A worker: argv[1] is the FIFO path; the code after the setup is the test's.
WORKER = """
import os, signal, sys, time
import filetimer
path = sys.argv[1]
filetimer.configure(filetimer.FileTimerClient(path))
"""

# A server in its own process, driven by commands on stdin, so a test can
# freeze it, kill it or shift its wall clock.
SERVER = """
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
"""


def wait_for(predicate, timeout=SLACK, interval=0.01):
    """Poll until predicate() is true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class FiletimerTestCase(unittest.TestCase):
    """A temporary directory, a FIFO path in it, and cleanup of every child."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="filetimer-test-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.path = os.path.join(self.dir, "timer.fifo")
        self.events = []

    def record(self, name, request):
        self.events.append((name, request))

    def event_names(self, pid=None):
        return [name for name, request in self.events if pid is None or (request and request.worker_pid == pid)]

    def serve(self, **options):
        options.setdefault("file_path", self.path)
        options.setdefault("log_event", self.record)
        server = FileTimerServer(**options)
        self.addCleanup(server.stop)
        server.start()
        return server

    def spawn(self, args, **kwargs):
        child = subprocess.Popen(args, env=kwargs.pop("env", ENV), **kwargs)
        self.addCleanup(self._reap, child)
        return child

    def spawn_worker(self, code, path=None):
        return self.spawn([sys.executable, "-c", WORKER + code, path or self.path])

    def spawn_sleeper(self):
        return self.spawn([sys.executable, "-c", "import time; time.sleep(60)"])

    def spawn_server(self, **options):
        """A server in a child process; returns (process, command function)."""
        child = self.spawn(
            [sys.executable, "-c", SERVER, self.path, json.dumps(options)],
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


class RequestTest(unittest.TestCase):
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
        self.assertEqual(FileTimerRequest.from_json(line), FileTimerRequest(99, "s", 5, 0))

    def test_from_json_refuses_malformed_lines(self):
        for line in ["", "[]", "{", '{"pid": 5}', b"\xff\xfe", "{" * 3000 + "}" * 3000]:
            with self.subTest(line=line[:20]):
                self.assertRaises(ValueError, FileTimerRequest.from_json, line)

    def test_to_json_refuses_a_non_finite_time(self):
        self.assertRaises(ValueError, FileTimerRequest(5, "s", float("nan")).to_json)


class DefaultPathTest(FiletimerTestCase):
    def test_default_path_follows_the_environment(self):
        cleared = {"XDG_RUNTIME_DIR": "", "FILETIMER_PATH": "", "TORCHELASTIC_TIMER_FILE": ""}
        with mock.patch.dict(os.environ, cleared):
            self.assertEqual(
                filetimer._resolve_path(None),
                os.path.join(tempfile.gettempdir(), "filetimer-%d.fifo" % os.getuid()),
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


class WatchdogTest(FiletimerTestCase):
    def test_hung_worker_is_killed_and_events_are_reported(self):
        server = self.serve(max_interval=10)
        worker = self.spawn_worker("with filetimer.expires(after=0.2):\n    time.sleep(60)\n")
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        self.assertEqual(self.event_names(worker.pid), ["timer expired", "kill worker process"])
        self.assertEqual(server.timers(), [])
        server.stop()
        self.assertEqual(self.event_names()[0], "watchdog started")
        self.assertEqual(self.event_names()[-1], "watchdog stopped")

    def test_worker_that_finishes_in_time_is_not_killed(self):
        server = self.serve()
        worker = self.spawn_worker("with filetimer.expires(after=5):\n    time.sleep(0.05)\n")
        self.assertEqual(worker.wait(SLACK), 0)
        self.assertTrue(wait_for(lambda: server.request_count == 2))
        self.assertEqual(server.timers(), [])
        self.assertNotIn("kill worker process", self.event_names())

    def test_expires_as_a_decorator(self):
        self.serve()
        worker = self.spawn_worker(
            "@filetimer.expires(after=0.2)\ndef step(s):\n    time.sleep(s)\nstep(0.01)\nstep(60)\n"
        )
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)

    def test_recursive_expires_re_acquires_the_scope(self):
        # Each level is quick, the whole recursion is not: only the innermost
        # acquire counts (torch's semantics), so the worker survives.
        self.serve()
        worker = self.spawn_worker(
            "def f(n):\n    if n:\n        with filetimer.expires(after=0.5):\n"
            "            f(n - 1)\n            time.sleep(0.2)\nf(4)\n"
        )
        self.assertEqual(worker.wait(SLACK), 0)

    def test_re_acquiring_a_scope_replaces_its_deadline(self):
        server = self.serve()
        with FileTimerClient(self.path) as client:
            for after in (100, 200, 300):
                with filetimer.expires(after, scope="same", client=client):
                    floor = time.time() + after - 50
                    self.assertTrue(wait_for(lambda floor=floor: [t.expiration_time > floor for t in server.timers()]
                                             == [True]))
            self.assertTrue(wait_for(lambda: server.timers() == []))

    def test_worker_that_exits_before_releasing_is_forgotten_unsignalled(self):
        sent = []
        with mock.patch("os.kill", lambda pid, sig: sent.append(pid)), \
                mock.patch.object(signal, "pidfd_send_signal", lambda fd, sig: sent.append(fd), create=True):
            server = self.serve(max_interval=0.1)
            worker = self.spawn_worker("filetimer._configured_client.acquire('s', time.time() + 0.5)\nos._exit(0)\n")
            self.assertEqual(worker.wait(SLACK), 0)
            self.assertTrue(wait_for(lambda: server.request_count == 1))
            self.assertTrue(wait_for(lambda: server.timers() == []))
            time.sleep(0.7)  # past the deadline
        self.assertEqual(sent, [])
        self.assertEqual(self.event_names(worker.pid), [])

    def test_requests_from_ten_processes_are_all_counted(self):
        server = self.serve()
        code = (
            "client = filetimer._configured_client\n"
            "for i in range(200):\n    client.acquire('s%d' % i, time.time() + 60)\n    client.release('s%d' % i)\n"
        )
        workers = [self.spawn_worker(code) for _ in range(10)]
        self.assertEqual([w.wait(SLACK * 3) for w in workers], [0] * 10)
        self.assertTrue(wait_for(lambda: server.request_count == 10 * 400))
        self.assertEqual((server.rejected_count, server.timers()), (0, []))

    def test_expired_signal_zero_timer_is_reported_once(self):
        server = self.serve(max_interval=0.02)
        sleeper = self.spawn_sleeper()
        server.register_timers([FileTimerRequest(sleeper.pid, "quiet", time.time() + 0.05, 0)])
        self.assertTrue(wait_for(lambda: "timer expired" in self.event_names()))
        time.sleep(0.3)  # many heartbeats
        self.assertEqual(self.event_names(sleeper.pid), ["timer expired"])
        self.assertIsNone(sleeper.poll())
        self.assertEqual(server.timers(), [])

    def test_earliest_signalled_timer_decides_and_all_are_dropped(self):
        server = self.serve()
        sleeper = self.spawn_sleeper()
        now = time.time()
        server.register_timers([
            FileTimerRequest(sleeper.pid, "a", now + 0.1, 0),
            FileTimerRequest(sleeper.pid, "b", now + 0.1, signal.SIGTERM),
            FileTimerRequest(sleeper.pid, "c", now + 60, signal.SIGKILL),
        ])
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGTERM)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        self.assertEqual(server.timers(), [])

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


class LifecycleTest(FiletimerTestCase):
    def watchdog_threads(self):
        return [t for t in threading.enumerate() if t.name == "filetimer-watchdog"]

    def test_stop_is_prompt_with_no_client_and_leaves_no_thread(self):
        server = FileTimerServer(self.path, max_interval=10)
        server.start()
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, 5)  # far below max_interval
        self.assertEqual(self.watchdog_threads(), [])
        self.assertFalse(os.path.exists(self.path))

    def test_stop_without_start_and_twice(self):
        server = FileTimerServer(self.path)
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

    def test_run_once_processes_pending_requests_then_stops(self):
        server = FileTimerServer(self.path, log_event=self.record)
        sleeper = self.spawn_sleeper()
        with FileTimerClient(self.path) as client:  # a client may write before start()
            client._send_request(FileTimerRequest(sleeper.pid, "late", time.time() - 1, signal.SIGTERM))
        server.run_once()
        self.assertEqual(server.request_count, 1)
        self.assertEqual(sleeper.wait(SLACK), -signal.SIGTERM)
        self.assertFalse(os.path.exists(self.path))

    def test_a_failing_log_event_callback_does_not_stop_the_watchdog(self):
        def explode(name, request):
            if request is not None:
                raise RuntimeError("callback bug")

        server = self.serve(log_event=explode)
        worker = self.spawn_worker("with filetimer.expires(after=0.1):\n    time.sleep(60)\n")
        with self.assertLogs("filetimer", "ERROR"):
            self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
            wait_for(lambda: server.timers() == [] and server.request_count == 1)
            time.sleep(0.05)


class ClientTest(FiletimerTestCase):
    def test_no_server_raises_broken_pipe(self):
        with FileTimerClient(self.path) as client:
            self.assertRaises(BrokenPipeError, client.acquire, "s", time.time() + 1)
        os.mkfifo(self.path)  # a FIFO nobody reads
        with FileTimerClient(self.path) as client:
            self.assertRaises(BrokenPipeError, client.release, "s")

    def test_request_over_pipe_buf_is_refused_before_writing(self):
        server = self.serve()
        with FileTimerClient(self.path) as client:
            self.assertRaises(ValueError, client.acquire, "x" * filetimer.PIPE_BUF, time.time() + 60)
            client.release("fits")
        self.assertTrue(wait_for(lambda: server.request_count == 1))
        self.assertEqual(server.rejected_count, 0)

    def test_fifo_is_held_open_unless_keep_open_is_false(self):
        server = self.serve()
        with FileTimerClient(self.path) as held, FileTimerClient(self.path, keep_open=False) as closing:
            held.release("a")
            closing.release("b")
            self.assertIsNotNone(held._fd)
            self.assertIsNone(closing._fd)
        self.assertTrue(wait_for(lambda: server.request_count == 2))

    def test_expires_without_a_client_raises(self):
        guard = filetimer.expires(after=1)
        with mock.patch.object(filetimer, "_configured_client", None), self.assertRaises(RuntimeError), guard:
            pass

    def test_default_scope_is_the_callers_file_and_line(self):
        guard = filetimer.expires(after=1)
        line = sys._getframe().f_lineno - 1
        self.assertEqual(guard._scope, "%s#%d" % (__file__, line))


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
            write_raw(self.path, b"garbage\n" * 100000)
            self.assertTrue(wait_for(lambda: server.rejected_count == 100000))
        self.assertLessEqual(len(logs.records), 2 * filetimer._REJECTS_LOGGED_PER_MINUTE + 2)


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


REUSE = """
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
    return subprocess.Popen([sys.executable, "-c", code, *args], **kwargs)

sleep = "import time; time.sleep(30)"
# 1. A worker arms a timer and exits; a new process gets its pid before the deadline.
worker = spawn_at(5000, "import filetimer, sys, time; c = filetimer.FileTimerClient(sys.argv[1]); "
                  "c.acquire('step', time.time() + 0.5); sys.stdin.read()", path, stdin=subprocess.PIPE)
while not server.timers():
    time.sleep(0.01)
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
filetimer.FileTimerClient(path)._send_request(
    filetimer.FileTimerRequest(heir2.pid, "stale", time.time() + 0.2, 9, start_time=dead_start))
time.sleep(1.5)
print(json.dumps({"pids": [worker.pid, heir.pid, dead.pid, heir2.pid],
                  "alive": [heir.poll() is None, heir2.poll() is None], "events": events}))
for p in (heir, heir2):
    p.kill(); p.wait()
server.stop()
"""


class PidReuseTest(FiletimerTestCase):
    """Safety rule: a timer is bound to its worker's identity, never to a later owner of the pid."""

    def run_in_pid_namespace(self, mode):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare to control pid allocation")
        result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REUSE,
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


class FifoPathTest(FiletimerTestCase):
    """Safety rule: the server never removes or follows what is not its own stale FIFO."""

    def assert_refused(self, path):
        with self.assertRaises(FileExistsError) as caught:
            FileTimerServer(path)
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

    def test_fifo_of_a_live_server_is_refused_and_that_server_keeps_working(self):
        first = self.serve()
        with self.assertRaises(FileExistsError) as caught:
            FileTimerServer(self.path)
        self.assertIn("already being served", str(caught.exception))
        with FileTimerClient(self.path) as client:
            client.release("still here")
        self.assertTrue(wait_for(lambda: first.request_count == 1))

    def test_stale_fifo_is_replaced(self):
        os.mkfifo(self.path, 0o644)
        os.chmod(self.path, 0o644)
        server = self.serve()
        self.assertEqual(stat_mode(self.path), 0o600)  # a new FIFO, made by the server
        with FileTimerClient(self.path) as client:
            client.release("x")
        self.assertTrue(wait_for(lambda: server.request_count == 1))

    def test_mode_is_exact_whatever_the_umask(self):
        for umask, mode in [(0o077, 0o660), (0o000, 0o600), (0o022, 0o620)]:
            with self.subTest(umask=oct(umask), mode=oct(mode)):
                old = os.umask(umask)
                try:
                    server = FileTimerServer(self.path, mode=mode)
                finally:
                    os.umask(old)
                self.assertEqual(stat_mode(self.path), mode)
                server.stop()

    def test_stop_removes_only_its_own_fifo(self):
        old = FileTimerServer(self.path)
        os.unlink(self.path)  # someone cleaned up, and a newer server took the path
        new = self.serve()
        old.stop()
        self.assertTrue(os.path.exists(self.path))
        with FileTimerClient(self.path) as client:
            client.release("x")
        self.assertTrue(wait_for(lambda: new.request_count == 1))
        new.stop()
        self.assertFalse(os.path.exists(self.path))


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


class BackPressureAndRestartTest(FiletimerTestCase):
    """Safety rules: a full pipe is waited on, never dropped; a restarted server is found again."""

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

    def test_client_raises_broken_pipe_then_finds_a_restarted_server(self):
        server, command = self.spawn_server()
        with FileTimerClient(self.path) as client:
            client.release("before")
            self.assertTrue(wait_for(lambda: command() == [1, 0, 0]))
            server.kill()
            server.wait()
            self.assertRaises(BrokenPipeError, client.release, "while down")
            restarted = self.serve()
            client.release("after")
            self.assertTrue(wait_for(lambda: restarted.request_count == 1))


class EscalationTest(FiletimerTestCase):
    """Safety rules: kill_after escalates to SIGKILL; exit_on_reap is off unless asked for."""

    IGNORE_TERM = (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "filetimer.configure(filetimer.FileTimerClient(path, signal=signal.SIGTERM))\n"
        "with filetimer.expires(after=0.1):\n    time.sleep(60)\n"
    )

    def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(self):
        self.serve(kill_after=0.3)
        worker = self.spawn_worker(self.IGNORE_TERM)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "escalate worker process" in self.event_names()))
        self.assertEqual(self.event_names(worker.pid), ["timer expired", "kill worker process",
                                                        "escalate worker process"])

    def test_without_kill_after_a_worker_ignoring_sigterm_survives(self):
        self.serve()
        worker = self.spawn_worker(self.IGNORE_TERM)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names()))
        time.sleep(0.3)
        self.assertIsNone(worker.poll())

    def test_server_survives_reaping_by_default_and_exits_with_exit_on_reap(self):
        hang = "with filetimer.expires(after=0.1):\n    time.sleep(60)\n"
        for exit_on_reap in (False, True):
            with self.subTest(exit_on_reap=exit_on_reap):
                server, command = self.spawn_server(exit_on_reap=exit_on_reap)
                self.assertEqual(self.spawn_worker(hang).wait(SLACK), -signal.SIGKILL)
                if exit_on_reap:
                    self.assertEqual(server.wait(SLACK), -signal.SIGKILL)
                else:
                    self.assertEqual(command()[0], 1)  # the acquire; the worker died holding it
                    server.kill()
                    server.wait()


class ClockStepTest(FiletimerTestCase):
    """Safety rule: deadlines are on the monotonic clock from arrival; wall-clock steps change nothing."""

    def test_wall_clock_steps_neither_kill_early_nor_spare(self):
        for step in (3600, -3600):
            with self.subTest(step=step):
                server, command = self.spawn_server()
                sleeper = self.spawn_sleeper()
                with FileTimerClient(self.path) as client:
                    client._send_request(FileTimerRequest(sleeper.pid, "s", time.time() + 1.0, signal.SIGKILL))
                self.assertTrue(wait_for(lambda command=command: command()[2] == 1))
                command("shift %d" % step)
                time.sleep(0.4)
                self.assertIsNone(sleeper.poll())  # not early
                self.assertEqual(sleeper.wait(SLACK), -signal.SIGKILL)  # not spared
                server.kill()
                server.wait()


TORCH_WORKER = """
import sys, time
from torch.distributed.elastic import timer
timer.configure(timer.FileTimerClient(sys.argv[1]))
with timer.expires(after=0.2):
    time.sleep(60)
"""

TORCH_SERVER = """
import sys, time
from torch.distributed.elastic.timer import FileTimerServer
server = FileTimerServer(sys.argv[1], "interop", max_interval=0.1)
server.start()
print("ready", flush=True)
time.sleep(60)
"""


@unittest.skipUnless(importlib.util.find_spec("torch"), "torch is not installed")
class TorchInteropTest(FiletimerTestCase):
    """Same wire format both ways: torch's client with our server, our client with torch's server."""

    def test_torch_worker_is_killed_by_our_server(self):
        self.serve()
        worker = self.spawn([sys.executable, "-c", TORCH_WORKER, self.path])
        self.assertEqual(worker.wait(SLACK * 3), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names(worker.pid)))

    def test_our_worker_is_killed_by_torch_server(self):
        # torch's server SIGKILLs its own process after reaping, so it runs in a child;
        # it only checks deadlines at end-of-file, so our client must not hold the pipe.
        server = self.spawn([sys.executable, "-c", TORCH_SERVER, self.path], stdout=subprocess.PIPE, text=True)
        self.assertEqual(server.stdout.readline().strip(), "ready")
        worker = self.spawn_worker(
            "filetimer.configure(filetimer.FileTimerClient(path, keep_open=False))\n"
            "with filetimer.expires(after=0.2):\n    time.sleep(60)\n"
        )
        self.assertEqual(worker.wait(SLACK * 3), -signal.SIGKILL)


class ShellTest(FiletimerTestCase):
    """acquire/release from shell scripts: the calling shell is the guarded process."""

    def shell(self, script):
        cli = "%s -m filetimer" % sys.executable
        return self.spawn(["sh", "-c", script.replace("FT", cli).replace("PATH_", self.path)])

    def test_a_hung_guarded_shell_script_is_killed(self):
        self.serve()
        script = self.shell("FT acquire --scope step --after 0.3 --path PATH_ && sleep 60")
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
                result = subprocess.run([sys.executable, "-m", "filetimer", "acquire", "--scope", spelling,
                                         "--after", "60", "--signal", spelling, "--pid", str(sleeper.pid),
                                         "--path", self.path], env=ENV, capture_output=True, timeout=SLACK)
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
            "no server": (3, ["acquire", "--scope", "s", "--after", "1", "--path", os.path.join(self.dir, "none")]),
        }
        for name, (status, args) in cases.items():
            with self.subTest(name):
                if "--path" not in args:
                    args = [*args, "--path", self.path]
                result = subprocess.run([sys.executable, "-m", "filetimer", *args], env=ENV, capture_output=True,
                                        text=True, timeout=SLACK)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn("Traceback", result.stderr)


class StateFileTest(FiletimerTestCase):
    """A snapshot of the active timers, written atomically, that survives a server restart."""

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.dir, "timers.state")

    def test_snapshot_is_private_atomic_and_follows_the_timers(self):
        server = self.serve(state_file=self.state)
        sleeper = self.spawn_sleeper()
        far = time.time() + 600
        server.register_timers([FileTimerRequest(sleeper.pid, "a", far, 9),
                                FileTimerRequest(sleeper.pid, "b", far, 15)])
        self.assertTrue(wait_for(lambda: len(self.saved()) == 2))
        self.assertEqual(stat_mode(self.state), 0o600)
        self.assertEqual({(t.scope_id, t.signal) for t in self.saved()}, {("a", 9), ("b", 15)})
        self.assertEqual({t.start_time for t in self.saved()}, {filetimer._process_start_time(sleeper.pid)})
        server.register_timers([FileTimerRequest(sleeper.pid, "a", -1)])
        self.assertTrue(wait_for(lambda: [t.scope_id for t in self.saved()] == ["b"]))
        self.assertEqual(sorted(os.listdir(self.dir)), ["timer.fifo", "timers.state"])  # no temporary left

    def saved(self):
        try:
            return filetimer._read_state(self.state)[1]
        except FileNotFoundError:
            return []

    def test_at_most_ten_writes_a_second(self):
        writes = []
        real = filetimer._write_state
        with mock.patch.object(filetimer, "_write_state", lambda path, timers: (writes.append(1), real(path, timers))):
            server = self.serve(state_file=self.state)
            sleeper = self.spawn_sleeper()
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                server.register_timers([FileTimerRequest(sleeper.pid, "churn", time.time() + 600, 9)])
                time.sleep(0.001)
            elapsed = time.monotonic() - started
            server.stop()
        self.assertGreater(len(writes), 1)
        self.assertLessEqual(len(writes), 10 * elapsed + 2)  # + the final write at stop()

    def test_a_worker_armed_before_a_server_crash_is_still_killed_after_restart(self):
        server, _ = self.spawn_server(state_file=self.state)
        worker = self.spawn_worker("with filetimer.expires(after=1.5):\n    time.sleep(60)\n")
        self.assertTrue(wait_for(lambda: len(self.saved()) == 1))
        server.kill()
        server.wait()
        self.assertIsNone(worker.poll())
        self.serve(state_file=self.state)
        self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
        self.assertTrue(wait_for(lambda: "kill worker process" in self.event_names(worker.pid)))  # by the new server

    def test_saved_timers_of_workers_that_are_gone_are_dropped(self):
        sleeper, gone = self.spawn_sleeper(), self.spawn_sleeper()
        far = time.time() + 600
        identity = filetimer._process_start_time(sleeper.pid)
        filetimer._write_state(self.state, [
            FileTimerRequest(sleeper.pid, "kept", far, 9, start_time=identity),
            FileTimerRequest(gone.pid, "exited", far, 9),
            FileTimerRequest(sleeper.pid, "other process", far, 9, start_time=(identity or 0) + 1),
        ])
        gone.kill()
        gone.wait()
        server = self.serve(state_file=self.state)
        self.assertEqual([t.scope_id for t in server.timers()], ["kept"])
        self.assertEqual(server.request_count, 0)

    def test_corrupt_truncated_or_foreign_state_files_are_moved_aside(self):
        good = b'{"format": "filetimer-state", "version": 1, "written": 1, "timers": []}'
        for name, content in {"corrupt": b"\x00garbage", "truncated": good[:40], "foreign": b'{"timers": []}',
                              "bad timer": good.replace(b"[]", b'[{"pid": "x"}]')}.items():
            with self.subTest(name):
                with open(self.state, "wb") as f:
                    f.write(content)
                with self.assertLogs("filetimer", "ERROR"):
                    server = FileTimerServer(self.path, state_file=self.state)
                self.assertEqual(server.timers(), [])
                with open(self.state + ".bad", "rb") as f:
                    self.assertEqual(f.read(), content)
                self.assertFalse(os.path.exists(self.state))
                server.stop()

    def test_a_failing_state_write_is_logged_and_stop_still_cleans_up(self):
        server = self.serve(state_file=self.state)
        with mock.patch.object(filetimer, "_write_state", side_effect=OSError(28, "No space left on device")), \
                self.assertLogs("filetimer", "ERROR"):
            server.register_timers([FileTimerRequest(self.spawn_sleeper().pid, "s", time.time() + 60, 9)])
            server.stop()
        self.assertFalse(os.path.exists(self.path))

    def test_a_state_path_that_cannot_be_written_is_refused_clearly(self):
        os.mkdir(self.state)
        for path in (self.state, os.path.join(self.dir, "missing", "x.state")):
            with self.subTest(path=path), self.assertRaises(OSError) as caught:
                FileTimerServer(self.path, state_file=path)
            self.assertIn(path if path == self.state else os.path.dirname(path), str(caught.exception))
        self.assertFalse(os.path.exists(self.path))  # refused before the FIFO was made

    def test_status_lists_the_timers_as_a_table_and_as_json(self):
        sleeper = self.spawn_sleeper()
        filetimer._write_state(self.state, [FileTimerRequest(sleeper.pid, "train", time.time() + 100, 15)])
        table = subprocess.run([sys.executable, "-m", "filetimer", "status", "--state-file", self.state],
                               env=ENV, capture_output=True, text=True, timeout=SLACK)
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("1 active timer", table.stdout)
        row = table.stdout.splitlines()[-1].split()
        self.assertEqual((row[0], row[1], row[3]), (str(sleeper.pid), "train", "SIGTERM"))
        self.assertTrue(90 < float(row[2]) <= 100)
        listing = subprocess.run([sys.executable, "-m", "filetimer", "status", "--json", "--state-file", self.state],
                                 env=ENV, capture_output=True, text=True, timeout=SLACK)
        timer, = json.loads(listing.stdout)["timers"]
        self.assertEqual((timer["pid"], timer["scope"], timer["signal"], timer["signal_name"]),
                         (sleeper.pid, "train", 15, "SIGTERM"))
        missing = subprocess.run([sys.executable, "-m", "filetimer", "status", "--state-file", self.state + ".no"],
                                 env=ENV, capture_output=True, text=True, timeout=SLACK)
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(len(missing.stderr.strip().splitlines()), 1)


class CommandLineTest(FiletimerTestCase):
    def run_cli(self, *args):
        return subprocess.run([sys.executable, "-m", "filetimer", *args], env=ENV, capture_output=True, text=True,
                              timeout=SLACK * 3)

    def start_cli(self, *args):
        child = self.spawn([sys.executable, "-m", "filetimer", "serve", self.path, *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertIn("serving " + self.path, child.stdout.readline())
        return child

    def test_serve_kills_a_hung_worker_and_stops_cleanly_on_sigterm_and_sigint(self):
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=stop_signal):
                server = self.start_cli("--max-interval", "5")
                worker = self.spawn_worker("with filetimer.expires(after=0.2):\n    time.sleep(60)\n")
                self.assertEqual(worker.wait(SLACK), -signal.SIGKILL)
                server.send_signal(stop_signal)
                self.assertEqual(server.wait(SLACK), 0)
                self.assertFalse(os.path.exists(self.path))
                self.assertIn("kill worker process", server.stderr.read())

    def test_serve_json_events(self):
        server = self.spawn([sys.executable, "-m", "filetimer", "serve", self.path, "--events", "json",
                             "--run-id", "r1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started = json.loads(server.stdout.readline())
        self.assertEqual((started["event"], started["run_id"]), ("watchdog started", "r1"))
        worker = self.spawn_worker("with filetimer.expires(after=0.1, scope='step'):\n    time.sleep(60)\n")
        worker.wait(SLACK)
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
                result = self.run_cli(*args)
                self.assertEqual(result.returncode, 2)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn("Traceback", result.stderr)
        with open(regular) as f:
            self.assertEqual(f.read(), "keep me")

    def test_help_and_version(self):
        self.assertIn("serve", self.run_cli("--help").stdout)
        self.assertIn("--kill-after", self.run_cli("serve", "--help").stdout)
        self.assertEqual(self.run_cli("--version").stdout.strip(), "filetimer " + filetimer.__version__)


if __name__ == "__main__":
    unittest.main()
