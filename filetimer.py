# filetimer - an out-of-process watchdog for hung worker processes.
# Copyright (c) 2026 the filetimer authors. MIT License: keep this notice in
# copies; the full text is in the LICENSE file of the filetimer project.
"""Kill worker processes that hang past their deadline.

A worker announces "this step must finish within N seconds"; a server (a
thread in a supervisor, or ``python -m filetimer serve``) signals the worker,
SIGKILL by default, if the step is still running when the time is up. It is
for the hangs an in-process timeout cannot break: C code, collectives,
deadlocks, blocking system calls.

Worker::

    import filetimer

    filetimer.configure(filetimer.FileTimerClient())
    with filetimer.expires(after=60):
        train_step()            # killed if it takes longer than 60 s

Supervisor::

    with filetimer.FileTimerServer(None) as server:
        run_workers()

Names, signatures and the wire format follow PyTorch's
``torch.distributed.elastic.timer`` FileTimerServer / FileTimerClient, so
either side can talk to the other: one JSON object per line, written
atomically (at most ``PIPE_BUF`` bytes) into a named pipe (FIFO)::

    {"version": 1, "pid": 1234, "scope_id": "train.py#42",
     "expiration_time": 1795000000.5, "signal": 9}

A negative ``expiration_time`` releases the timer.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import heapq
import json
import logging
import math
import os
import select
import selectors
import signal
import stat
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Set, Tuple, TypeVar, Union, cast

__version__ = "0.1.0"
__all__ = [
    "FileTimerClient",
    "FileTimerRequest",
    "FileTimerServer",
    "configure",
    "expires",
]

_log = logging.getLogger("filetimer")

# --- wire format ------------------------------------------------------------

PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)  # a write this size is atomic
VERSION = 1  # the only request version there is
_PID_MAX = 2**31 - 1  # largest pid_t
_SIGKILL: int = getattr(signal, "SIGKILL", 9)  # getattr: importable on Windows
_NSIG: int = getattr(signal, "NSIG", 65)
_json_str = json.encoder.encode_basestring_ascii
# The C scanner, without json.loads' Python wrappers (typeshed does not declare scan_once).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_TIME_MAX = 2**63  # seconds; an int time beyond this is nonsense (and may not fit a float)


class FileTimerRequest:
    """One acquire or release, as carried on the wire.

    ``expiration_time`` is wall-clock epoch seconds; a negative value means
    "release". ``start_time`` is an optional identity hint (the worker's start
    time from ``/proc/<pid>/stat``) that guards against pid reuse; servers
    that do not know it ignore it, and it takes no part in equality.
    """

    __slots__ = ("expiration_time", "scope_id", "signal", "start_time", "version", "worker_pid")

    def __init__(
        self,
        worker_pid: int,
        scope_id: str,
        expiration_time: float,
        signal: int = 0,
        *,
        start_time: Optional[int] = None,
    ) -> None:
        self.version = VERSION
        self.worker_pid = worker_pid
        self.scope_id = scope_id
        self.expiration_time = expiration_time
        self.signal = signal
        self.start_time = start_time

    @property
    def worker_id(self) -> int:
        """The worker's pid, under the name torch's TimerRequest uses."""
        return self.worker_pid

    def _value(self) -> Tuple[int, int, str, float, int]:
        """What equality compares: torch's fields."""
        return (self.version, self.worker_pid, self.scope_id, self.expiration_time, self.signal)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileTimerRequest):
            return NotImplemented
        return self._value() == other._value()

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    def __repr__(self) -> str:
        return "FileTimerRequest(worker_pid=%r, scope_id=%r, expiration_time=%r, signal=%r)" % self._value()[1:]

    def to_json(self) -> str:
        """One wire line, without the newline."""
        return _wire_line(self.worker_pid, self.scope_id, self.expiration_time, self.signal, self.start_time,
                          self.version)[:-1].decode("ascii")

    @classmethod
    def from_json(cls, line: Union[str, bytes]) -> "FileTimerRequest":
        """Parse and validate one wire line; raise ValueError on anything malformed.

        This is the server's hot path: one flat pass, no helper calls when the line is good.
        """
        data = line.encode("utf-8") if isinstance(line, str) else line
        if data[-1:] == b"\n":
            data = data[:-1]
        if len(data) >= PIPE_BUF:
            raise ValueError("line of %d bytes is longer than PIPE_BUF (%d)" % (len(data) + 1, PIPE_BUF))
        text = data.decode("utf-8")
        try:
            try:
                obj, end = _scan_json(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):  # whitespace, trailing data or not JSON: let json.loads judge
                obj = json.loads(text)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        return cls._from_fields(obj)

    @classmethod
    def _from_fields(cls, obj: object) -> "FileTimerRequest":
        """Validate a decoded wire object (also used for the state file's timers)."""
        if type(obj) is not dict:
            raise ValueError("not a JSON object")
        get = obj.get
        version, pid, scope_id = get("version"), get("pid"), get("scope_id")
        expiration, sig, start_time = get("expiration_time"), get("signal"), get("start_time")
        if not (type(version) is int and version == VERSION):
            raise _invalid("version", version, "1")
        if not (type(pid) is int and 2 <= pid <= _PID_MAX):
            raise _invalid("pid", pid, "an integer from 2 to %d" % _PID_MAX)
        if type(scope_id) is not str:
            raise _invalid("scope_id", scope_id, "a string")
        if not ((type(expiration) is float and math.isfinite(expiration))
                or (type(expiration) is int and -_TIME_MAX < expiration < _TIME_MAX)):
            raise _invalid("expiration_time", expiration, "a finite number")
        if not (type(sig) is int and 0 <= sig < _NSIG):
            raise _invalid("signal", sig, "an integer from 0 to %d" % (_NSIG - 1))
        if not (start_time is None or (type(start_time) is int and 0 <= start_time < _TIME_MAX)):
            raise _invalid("start_time", start_time, "a non-negative integer")
        return cls(pid, scope_id, expiration, sig, start_time=start_time)


_LINE = '{"version": %d, "pid": %d, "scope_id": %s, "expiration_time": %r, "signal": %d}\n'
_LINE_WITH_START = '{"version": %d, "pid": %d, "scope_id": %s, "expiration_time": %r, "signal": %d, "start_time": %d}\n'


def _wire_line(
    pid: int, scope_id: str, expiration_time: float, sig: int, start_time: Optional[int], version: int = VERSION
) -> bytes:
    """A request as the newline-terminated bytes written to the FIFO.

    Formatted by hand (json.dumps costs more than the write itself); the
    client calls this directly, without building a FileTimerRequest.
    """
    expiration = float(expiration_time)
    if not math.isfinite(expiration):
        raise ValueError("expiration_time must be finite, got %r" % (expiration_time,))
    if start_time is None:
        text = _LINE % (version, pid, _json_str(scope_id), expiration, sig)
    else:
        text = _LINE_WITH_START % (version, pid, _json_str(scope_id), expiration, sig, start_time)
    return text.encode("ascii")


def _invalid(field: str, value: object, expected: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return ValueError("%s must be %s, got %s" % (field, expected, "nothing" if value is None else shown))


# --- client -------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])


def _retry(max_retries: int, sleep_time: float) -> Callable[[_F], _F]:
    """Call the function up to max_retries times, sleep_time apart, while it raises OSError."""

    def decorate(func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(max_retries):
                try:
                    return func(*args, **kwargs)
                except OSError:
                    if attempt == max_retries - 1:
                        raise
                    time.sleep(sleep_time)

        return cast(_F, wrapper)

    return decorate


def _require_posix() -> None:
    if not hasattr(os, "mkfifo"):
        raise OSError("filetimer needs named pipes and POSIX signals; %s has neither" % sys.platform)


def _default_path() -> str:
    """$XDG_RUNTIME_DIR/filetimer.fifo, else <tempdir>/filetimer-<uid>.fifo."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "filetimer.fifo")
    return os.path.join(tempfile.gettempdir(), "filetimer-%d.fifo" % os.getuid())


def _resolve_path(file_path: Optional[str]) -> str:
    """The FIFO path: the argument, $FILETIMER_PATH, $TORCHELASTIC_TIMER_FILE or the default."""
    return (
        file_path
        or os.environ.get("FILETIMER_PATH")
        or os.environ.get("TORCHELASTIC_TIMER_FILE")
        or _default_path()
    )


def _process_start_time(pid: int) -> Optional[int]:
    """Start time of pid in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat_line = f.read()
        # Field 22; the command name (field 2) may hold spaces and parentheses.
        return int(stat_line[stat_line.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class FileTimerClient:
    """Sends timer requests for the calling process to a FileTimerServer.

    The FIFO stays open between requests. When the server has gone away the
    path is reopened (a restarted server is found again); when nobody serves
    it, BrokenPipeError is raised. A full pipe is waited on for up to
    ``timeout`` seconds, then TimeoutError is raised. Pass ``keep_open=False``
    to close the FIFO after each request, as torch does: torch's server only
    checks deadlines when its pipe reaches end-of-file, so it needs that.
    """

    def __init__(
        self,
        file_path: Optional[str] = None,
        signal: int = _SIGKILL,
        *,
        timeout: float = 10.0,
        keep_open: bool = True,
    ) -> None:
        _require_posix()
        self._file_path = _resolve_path(file_path)
        self.signal = signal
        self._timeout = timeout
        self._keep_open = keep_open
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        self._identity: Tuple[int, Optional[int]] = (0, None)  # (pid, start time), redone after fork

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        """Arm (or re-arm) the timer ``scope_id`` to fire at wall-clock ``expiration_time``."""
        pid, start_time = self._worker_identity()
        self._send_line(_wire_line(pid, scope_id, expiration_time, self.signal, start_time))

    def release(self, scope_id: str) -> None:
        """Disarm the timer ``scope_id``."""
        pid, start_time = self._worker_identity()
        self._send_line(_wire_line(pid, scope_id, -1, 0, start_time))

    def close(self) -> None:
        """Close the FIFO handle; a later request opens it again."""
        with self._lock:
            self._close_fd()

    def __enter__(self) -> "FileTimerClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _worker_identity(self) -> Tuple[int, Optional[int]]:
        pid = os.getpid()
        if self._identity[0] != pid:
            self._identity = (pid, _process_start_time(pid))
        return self._identity

    def _send_request(self, request: FileTimerRequest) -> None:
        """Send any request, e.g. one on behalf of another process (the CLI's --pid)."""
        self._send_line(_wire_line(request.worker_pid, request.scope_id, request.expiration_time, request.signal,
                                   request.start_time, request.version))

    def _send_line(self, line: bytes) -> None:
        if len(line) > PIPE_BUF:
            raise ValueError("request of %d bytes exceeds PIPE_BUF (%d): scope_id too long" % (len(line), PIPE_BUF))
        with self._lock:
            self._write_line(line)
            if not self._keep_open:
                self._close_fd()

    def _write_line(self, line: bytes) -> None:
        """Write one whole line: wait out a full pipe, reopen once after a server restart."""
        deadline = None
        reopened = False
        while True:
            if self._fd is None:
                self._fd = self._connect()
            try:
                os.write(self._fd, line)  # all or nothing: len(line) <= PIPE_BUF
                return
            except BlockingIOError:
                if deadline is None:
                    deadline = time.monotonic() + self._timeout
                self._wait_writable(deadline)
            except BrokenPipeError:  # the server that had this pipe open is gone
                self._close_fd()
                if reopened:
                    raise
                reopened = True

    def _connect(self) -> int:
        try:
            return self._open_non_blocking()
        except OSError as e:
            raise BrokenPipeError(
                "no filetimer server is reading %s (%s)" % (self._file_path, e.strerror or e)
            ) from e

    @_retry(max_retries=5, sleep_time=0.1)
    def _open_non_blocking(self) -> int:
        # Non-blocking: with no reader the open fails (ENXIO) instead of hanging.
        fd = os.open(self._file_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a FIFO")
        return fd

    def _wait_writable(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                "the filetimer server at %s did not read its pipe for %.1f s" % (self._file_path, self._timeout)
            )
        assert self._fd is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_WRITE)
            sel.select(remaining)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_configured_client: Optional[FileTimerClient] = None


def configure(client: FileTimerClient) -> None:
    """Set the client that ``expires`` uses when none is passed to it."""
    global _configured_client
    _configured_client = client


class expires:
    """Arm a timer that fires ``after`` seconds from now; release it on exit.

    A context manager, and a decorator (each call gets its own timer). The
    default scope is the caller's ``file#line``; re-entering the same scope
    (recursion) re-arms the timer, as torch does.
    """

    __slots__ = ("_after", "_armed", "_client", "_scope")

    def __init__(self, after: float, scope: Optional[str] = None, client: Optional[FileTimerClient] = None) -> None:
        if scope is None:
            caller = sys._getframe(1)
            scope = "%s#%d" % (caller.f_code.co_filename, caller.f_lineno)
        self._after = after
        self._scope = scope
        self._client = client
        self._armed: Optional[FileTimerClient] = None

    def __enter__(self) -> None:
        client = self._client or _configured_client
        if client is None:
            raise RuntimeError("filetimer: no client; call filetimer.configure(FileTimerClient(...)) first")
        client.acquire(self._scope, time.time() + self._after)
        self._armed = client

    def __exit__(self, *exc_info: object) -> None:
        client, self._armed = self._armed, None
        if client is not None:
            client.release(self._scope)

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with expires(self._after, self._scope, self._client):
                return func(*args, **kwargs)

        return cast(_F, guarded)


# --- server -------------------------------------------------------------------

_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
_READ_SIZE = 65536
_SELECT_RESOLUTION = 0.001  # seconds: epoll and poll take whole milliseconds
_MAX_READS_PER_PASS = 64  # then look at deadlines again, even under a flood
_REJECTS_LOGGED_PER_MINUTE = 10


class _Worker:
    """A watched process, bound to its identity so a reused pid is never signalled.

    The identity is a pidfd where the platform has one, else the start time
    from /proc (else, on macOS, only the pid).
    """

    __slots__ = ("pid", "pidfd", "scopes", "start_time")

    def __init__(self, pid: int, pidfd: Optional[int], start_time: Optional[int]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.start_time = start_time
        self.scopes: Set[str] = set()

    @classmethod
    def attach(cls, pid: int, claimed_start_time: Optional[int]) -> Optional["_Worker"]:
        """The running process ``pid``, or None if it is gone or not the one that claims it."""
        pidfd = None
        if _HAVE_PIDFD:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            except OSError:  # old kernel, EMFILE, ...: fall back to the start time
                pidfd = None
        worker = cls(pid, pidfd, _process_start_time(pid))
        if not worker.is_alive() or (
            claimed_start_time is not None
            and worker.start_time is not None
            and claimed_start_time != worker.start_time
        ):
            worker.close()
            return None
        return worker

    def is_alive(self) -> bool:
        """Still running and still the same process (checked without a pidfd)."""
        if self.pidfd is not None:  # readable once the process has exited
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            return not poller.poll(0)
        if self.start_time is not None:
            return _process_start_time(self.pid) == self.start_time
        return FileTimerServer.is_process_running(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.pidfd is not None:
            signal.pidfd_send_signal(self.pidfd, sig)
        elif self.is_alive():
            os.kill(self.pid, sig)
        else:
            raise ProcessLookupError(errno.ESRCH, "process %d has exited" % self.pid)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _create_fifo(path: str, mode: int) -> Tuple[int, Tuple[int, int]]:
    """Make the FIFO with exactly ``mode``; return a non-blocking read fd and its (dev, ino).

    A stale FIFO is replaced; anything else at the path is left alone.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISFIFO(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else (
                "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a FIFO"
            )
            raise FileExistsError("%s exists and is %s; refusing to replace it" % (path, kind))
        if _fifo_has_reader(path):
            raise FileExistsError("%s is already being served by a running server" % path)
        os.unlink(path)  # stale: its server is gone
    os.mkfifo(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    st = os.fstat(fd)
    if not stat.S_ISFIFO(st.st_mode):
        os.close(fd)
        raise FileExistsError("%s was replaced while being created" % path)
    os.fchmod(fd, mode)  # mkfifo applied the umask
    return fd, (st.st_dev, st.st_ino)


def _fifo_has_reader(path: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)
    return True


_STATE_FORMAT = "filetimer-state"
_STATE_WRITES_PER_SECOND = 10


def _default_state_path() -> str:
    """Where ``serve --state-file`` and ``status`` look by default: beside the default FIFO."""
    return os.path.splitext(_default_path())[0] + ".state"


def _check_state_path(path: str) -> None:
    """Fail now, clearly, if the state file could never be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError("the directory of the state file %s does not exist" % path)
    if not os.access(directory, os.W_OK):
        raise PermissionError("cannot write the state file's directory %s" % directory)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise FileExistsError("state file %s exists and is not a regular file; refusing to replace it" % path)


def _write_state(path: str, timers: List[FileTimerRequest]) -> None:
    """Replace the state file atomically: a private temporary file, fsync, rename."""
    directory, name = os.path.split(os.path.abspath(path))
    lines = ",\n".join(request.to_json() for request in timers)
    text = '{"format": "%s", "version": 1, "written": %r, "timers": [\n%s\n]}\n' % (_STATE_FORMAT, time.time(), lines)
    fd, temporary = tempfile.mkstemp(prefix=name + ".", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_state(path: str) -> Tuple[float, List[FileTimerRequest]]:
    """The time a state file was written and its timers; ValueError if it is corrupt or foreign."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        document = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not (isinstance(document, dict) and document.get("format") == _STATE_FORMAT
            and document.get("version") == 1 and isinstance(document.get("timers"), list)):
        raise ValueError("not a filetimer state file")
    written = document.get("written")
    if not isinstance(written, (int, float)):
        raise ValueError("the state file has no time of writing")
    return float(written), [FileTimerRequest._from_fields(timer) for timer in document["timers"]]


LogEvent = Callable[[str, Optional[FileTimerRequest]], None]


class FileTimerServer:
    """Watches the FIFO and signals workers whose timers expire.

    One watchdog thread blocks in a single select on the FIFO, a wake-up pipe
    and the workers' pidfds, and wakes at the earliest of: a request, the
    nearest deadline, a worker exit, ``stop()``, or the ``max_interval``
    heartbeat. Deadlines are kept on the monotonic clock.

    Keyword options beyond torch's: ``mode`` of the FIFO; ``kill_after``
    seconds after which a signalled worker that is still alive gets SIGKILL;
    ``exit_on_reap`` to signal the server's own process after reaping a
    worker, as torch does; ``state_file`` to keep a snapshot of the active
    timers there (at most ten writes a second) and re-arm them on restart.
    """

    def __init__(
        self,
        file_path: Optional[str],
        run_id: str = "",
        max_interval: float = 10,
        daemon: bool = True,
        log_event: Optional[LogEvent] = None,
        *,
        mode: int = 0o600,
        kill_after: Optional[float] = None,
        exit_on_reap: bool = False,
        state_file: Optional[str] = None,
    ) -> None:
        _require_posix()
        if not (isinstance(max_interval, (int, float)) and 0 < max_interval < math.inf):
            raise ValueError("max_interval must be a positive number of seconds, got %r" % (max_interval,))
        if kill_after is not None and not (isinstance(kill_after, (int, float)) and 0 <= kill_after < math.inf):
            raise ValueError("kill_after must be None or a non-negative number of seconds, got %r" % (kill_after,))
        if not (isinstance(mode, int) and 0 <= mode <= 0o777):
            raise ValueError("mode must be permission bits such as 0o600, got %r" % (mode,))
        if state_file is not None:
            _check_state_path(state_file)
        self._file_path = _resolve_path(file_path)
        self._run_id = run_id
        self._max_interval = float(max_interval)
        self._daemon = daemon
        self._log_event_cb = log_event
        self._kill_after = kill_after
        self._exit_on_reap = exit_on_reap
        self._state_file = state_file
        self._state_changed = threading.Event()  # set when the timers change
        self._state_stop = threading.Event()
        self._state_thread: Optional[threading.Thread] = None

        self.request_count = 0  # valid requests processed
        self.rejected_count = 0  # lines refused
        self._lock = threading.RLock()  # guards everything below against the public methods
        # Active timers by (pid, scope). Each is also a heap entry
        # [deadline, seq, request]; a replaced or released entry has its
        # request set to None and is skipped when it reaches the top.
        self._timers: Dict[Tuple[int, str], List[Any]] = {}
        self._heap: List[List[Any]] = []
        self._seq = 0
        self._workers: Dict[int, _Worker] = {}
        self._escalations: Dict[int, float] = {}  # pid -> monotonic time of SIGKILL
        self._partial = b""  # an unfinished line from the last read
        self._skipping = False  # inside an over-long line, until its newline
        self._rejects_logged = 0
        self._rejects_window_end = 0.0
        self._last_progress_time = int(time.time())
        self._next_beat = time.monotonic() + self._max_interval
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._closed = False

        self._read_fd, self._fifo_id = _create_fifo(self._file_path, mode)
        # Our own writer: the FIFO never reaches end-of-file, so no client
        # has to connect first and the read loop never spins.
        self._hold_fd = os.open(self._file_path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._read_fd, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        if state_file is not None:
            self._restore_state(state_file)

    # -- life cycle

    def start(self) -> None:
        """Start the watchdog thread."""
        if self._closed:
            raise RuntimeError("this FileTimerServer was stopped; create a new one")
        if self._thread is not None:
            return
        _log.info("serving %s (max_interval=%s)", self._file_path, self._max_interval)
        self._thread = threading.Thread(target=self._watchdog_loop, name="filetimer-watchdog", daemon=self._daemon)
        self._thread.start()
        if self._state_file is not None:
            self._state_thread = threading.Thread(target=self._state_loop, name="filetimer-state", daemon=True)
            self._state_thread.start()
        self._log_event("watchdog started", None)

    def stop(self) -> None:
        """Stop the watchdog, save the state, close everything and remove the FIFO if it is still ours."""
        self._stop_thread()
        with self._lock:
            if self._closed:
                return
            if self._state_file is not None:
                self._save_state()
            self._close()
        self._log_event("watchdog stopped", None)

    def run_once(self) -> None:
        """Process what is in the pipe and every expired timer once, then stop (as torch does)."""
        self._stop_thread()
        with self._lock:
            if not self._closed:
                self._run_pass(self._selector.select(0))
        self.stop()

    def __enter__(self) -> "FileTimerServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stop_thread(self) -> None:
        thread = self._thread
        self._stopping = True
        self._state_stop.set()
        self._state_changed.set()
        if self._state_thread is not None:
            self._state_thread.join()
            self._state_thread = None
        if thread is None or thread is threading.current_thread():
            return
        self._wake()
        thread.join()
        self._thread = None

    def _wake(self) -> None:
        """Make the watchdog's select return, so it re-reads its state."""
        with contextlib.suppress(BlockingIOError):  # already full of wake-ups
            os.write(self._wake_w, b"!")

    def _close(self) -> None:
        self._closed = True
        for worker in list(self._workers.values()):
            self._forget_worker(worker)
        self._selector.close()
        for fd in (self._read_fd, self._hold_fd, self._wake_r, self._wake_w):
            os.close(fd)
        try:
            st = os.lstat(self._file_path)
            if stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == self._fifo_id:
                os.unlink(self._file_path)
        except OSError:
            pass

    # -- torch's public methods

    @staticmethod
    def is_process_running(pid: int) -> bool:
        """Whether a process with this pid exists (0 and negative pids are never "running")."""
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except PermissionError:
            return True  # it exists, it just isn't ours
        except OSError:
            return False
        return True

    def get_last_progress_time(self) -> int:
        """Wall-clock second of the watchdog's last pass."""
        return self._last_progress_time

    def register_timers(self, timer_requests: Iterable[FileTimerRequest]) -> None:
        """Apply acquires and releases, in order, as if they had arrived on the FIFO."""
        with self._lock:
            self._apply(timer_requests, time.time(), time.monotonic())
            if not self._closed:
                self._wake()  # a new deadline may be the nearest

    def clear_timers(self, worker_pids: Iterable[int]) -> None:
        """Drop every timer of these pids, and of workers that have exited."""
        with self._lock:
            for pid in set(worker_pids):
                worker = self._workers.get(pid)
                if worker is not None:
                    self._drop_timers(worker)
            for worker in list(self._workers.values()):
                if not worker.is_alive():
                    self._forget_worker(worker)

    def get_expired_timers(self, deadline: float) -> Dict[int, List[FileTimerRequest]]:
        """Active timers due at or before the wall-clock ``deadline``, by pid."""
        with self._lock:
            due = time.monotonic() + (deadline - time.time())
            expired: Dict[int, List[FileTimerRequest]] = {}
            for entry in sorted(self._timers.values()):
                if entry[0] <= due:
                    expired.setdefault(entry[2].worker_pid, []).append(entry[2])
            return expired

    def timers(self) -> List[FileTimerRequest]:
        """A snapshot of the active timers."""
        with self._lock:
            return [entry[2] for entry in self._timers.values()]

    @property
    def file_path(self) -> str:
        return self._file_path

    # -- the watchdog

    def _watchdog_loop(self) -> None:
        while not self._stopping:
            try:
                ready = self._wait_for_events()
                with self._lock:
                    if self._stopping:
                        break
                    self._run_pass(ready)
            except Exception:  # never let the watchdog die
                _log.exception("filetimer watchdog pass failed; carrying on")
                time.sleep(0.01)  # a fault that repeats must not spin a core

    def _wait_for_events(self) -> List[Tuple[selectors.SelectorKey, int]]:
        """Block until a request, a worker exit or stop(), or until the next deadline or heartbeat.

        select() sleeps in whole milliseconds, rounded up. Before a timer
        deadline the last fraction of a millisecond is slept precisely
        instead, so a kill is not up to a millisecond late.
        """
        with self._lock:
            heap = self._heap
            while heap and heap[0][2] is None:  # released or replaced
                heapq.heappop(heap)
            deadline = heap[0][0] if heap else math.inf
            if self._escalations:
                deadline = min(deadline, min(self._escalations.values()))
        if deadline > self._next_beat:  # only the heartbeat is due: no precision needed
            return self._selector.select(max(0.0, self._next_beat - time.monotonic()))
        timeout = deadline - time.monotonic()
        if timeout > _SELECT_RESOLUTION:
            ready = self._selector.select(timeout - _SELECT_RESOLUTION)
            if ready:
                return ready
            timeout = deadline - time.monotonic()
        time.sleep(max(0.0, timeout))
        return self._selector.select(0)

    def _run_pass(self, ready: List[Tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in ready:
            if key.fd == self._read_fd:
                self._read_requests()
            elif key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            elif isinstance(key.data, _Worker):
                self._forget_worker(key.data)  # its pidfd is readable: it exited
        now = time.monotonic()
        self._reap_expired(now)
        if self._escalations:
            self._escalate(now)
        if now >= self._next_beat:
            self._next_beat = now + self._max_interval
            for worker in list(self._workers.values()):
                if worker.pidfd is None and not worker.is_alive():
                    self._forget_worker(worker)
        self._last_progress_time = int(time.time())

    def _read_requests(self) -> None:
        for _ in range(_MAX_READS_PER_PASS):
            try:
                chunk = os.read(self._read_fd, _READ_SIZE)
            except BlockingIOError:
                return
            self._ingest(chunk)
            if len(chunk) < _READ_SIZE:
                return

    def _ingest(self, chunk: bytes) -> None:
        """Split a read into lines; apply the valid requests, count and log the rest."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if self._skipping:
            if not lines:  # still inside the over-long line
                self._partial = b""
                return
            del lines[0]  # its end, already rejected
            self._skipping = False
        if len(self._partial) >= PIPE_BUF:
            self._reject(self._partial, "line longer than PIPE_BUF (%d)" % PIPE_BUF)
            self._partial = b""
            self._skipping = True
        requests = []
        for line in lines:
            if line:
                try:
                    requests.append(FileTimerRequest.from_json(line))
                except ValueError as e:
                    self._reject(line, str(e))
        self._apply(requests, time.time(), time.monotonic())

    def _reject(self, line: bytes, reason: str) -> None:
        """Count a refused line and log it, at most a few per minute."""
        self.rejected_count += 1
        now = time.monotonic()
        if now >= self._rejects_window_end:
            suppressed = self._rejects_logged - _REJECTS_LOGGED_PER_MINUTE
            if suppressed > 0:
                _log.warning("%d more rejected lines were not logged", suppressed)
            self._rejects_window_end = now + 60
            self._rejects_logged = 0
        self._rejects_logged += 1
        if self._rejects_logged <= _REJECTS_LOGGED_PER_MINUTE:
            _log.warning("rejected request %r: %s", line[:100], reason)

    def _apply(self, requests: Iterable[FileTimerRequest], wall_now: float, mono_now: float) -> None:
        """Arm, re-arm or release each request's timer, in order (the ingest hot path)."""
        timers, workers, heap = self._timers, self._workers, self._heap
        applied = 0
        for request in requests:
            applied += 1
            pid, scope = request.worker_pid, request.scope_id
            old = timers.pop((pid, scope), None)
            if old is not None:
                old[2] = None  # its heap entry is now stale
            worker = workers.get(pid)
            if request.expiration_time < 0:
                if worker is not None:
                    worker.scopes.discard(scope)
                continue
            if worker is None or request.start_time not in (None, worker.start_time):
                worker = self._watch(request)
                if worker is None:
                    continue
            # Converted once, on arrival: a wall-clock step later changes nothing.
            entry = [mono_now + (request.expiration_time - wall_now), self._seq, request]
            self._seq += 1
            timers[pid, scope] = entry
            heapq.heappush(heap, entry)
            worker.scopes.add(scope)
        self.request_count += applied
        if applied:
            self._state_changed.set()
        if len(heap) > 2 * len(timers) + 1024:  # mostly stale entries
            self._heap = list(timers.values())
            heapq.heapify(self._heap)

    def _watch(self, request: FileTimerRequest) -> Optional[_Worker]:
        """The worker record for the request's pid, made on first sight; None if it is gone."""
        pid = request.worker_pid
        worker = self._workers.get(pid)
        if worker is not None:
            if request.start_time is None or worker.start_time in (None, request.start_time):
                return worker
            if worker.is_alive():  # the request names an earlier process that had this pid
                _log.info("ignoring a timer for pid %d: it names a process that has exited", pid)
                return None
            self._forget_worker(worker)  # the pid now belongs to the process the request names
        if pid <= 1:
            _log.error("refusing a timer for pid %d: it names a process group or init", pid)
            return None
        worker = _Worker.attach(pid, request.start_time)
        if worker is None:
            _log.info("ignoring a timer for pid %d: the process is gone", pid)
            return None
        self._workers[pid] = worker
        if worker.pidfd is not None:
            self._selector.register(worker.pidfd, selectors.EVENT_READ, worker)
        return worker

    def _forget_worker(self, worker: _Worker) -> None:
        """Drop an exited worker: its timers, its escalation and its pidfd."""
        self._drop_timers(worker)
        self._escalations.pop(worker.pid, None)
        if self._workers.get(worker.pid) is worker:
            del self._workers[worker.pid]
        if worker.pidfd is not None:
            self._selector.unregister(worker.pidfd)
            worker.close()

    def _drop_timers(self, worker: _Worker) -> None:
        for scope in worker.scopes:
            entry = self._timers.pop((worker.pid, scope), None)
            if entry is not None:
                entry[2] = None
        if worker.scopes:
            worker.scopes.clear()
            self._state_changed.set()

    def _reap_expired(self, now: float) -> None:
        """Report every expired timer; signal each worker once, with its earliest non-zero signal."""
        heap = self._heap
        expired: Dict[int, List[FileTimerRequest]] = {}
        while heap and heap[0][0] <= now:
            request = heapq.heappop(heap)[2]
            if request is None:
                continue
            del self._timers[(request.worker_pid, request.scope_id)]
            self._workers[request.worker_pid].scopes.discard(request.scope_id)
            expired.setdefault(request.worker_pid, []).append(request)
        if expired:
            self._state_changed.set()
        reap_signal = 0
        for pid, requests in expired.items():
            for request in requests:
                self._log_event("timer expired", request)
            decider = next((r for r in requests if r.signal > 0), None)
            if decider is None:  # signal 0: reported once, dropped
                continue
            worker = self._workers[pid]
            _log.info("reaping pid %d (scopes %s) with signal %d", pid, [r.scope_id for r in requests], decider.signal)
            self._drop_timers(worker)
            if self._signal(worker, decider.signal):
                self._log_event("kill worker process", decider)
                reap_signal = decider.signal
                if self._kill_after is not None and decider.signal != _SIGKILL:
                    self._escalations[pid] = now + self._kill_after
        if reap_signal and self._exit_on_reap:
            _log.info("exit_on_reap: signalling the server's own process %d", os.getpid())
            os.kill(os.getpid(), reap_signal)

    def _escalate(self, now: float) -> None:
        for pid, when in list(self._escalations.items()):
            if when <= now:
                del self._escalations[pid]
                worker = self._workers.get(pid)
                if worker is not None and self._signal(worker, _SIGKILL):
                    _log.info("pid %d outlived its grace period; sent SIGKILL", pid)
                    self._log_event("escalate worker process", FileTimerRequest(pid, "", -1, _SIGKILL))

    def _signal(self, worker: _Worker, sig: int) -> bool:
        """Signal the worker if that is safe and it is still the same process."""
        pid = worker.pid
        if pid <= 1 or (pid == os.getpid() and not self._exit_on_reap):
            _log.error("refusing to signal pid %d", pid)
            return False
        try:
            worker.send_signal(sig)
        except ProcessLookupError:
            _log.info("pid %d exited before it could be signalled", pid)
            return False
        except OSError as e:
            _log.error("could not signal pid %d: %s", pid, e)
            return False
        return True

    # -- the state file

    def _restore_state(self, path: str) -> None:
        """Re-arm the saved timers of workers that are still the same process; survive a bad file."""
        try:
            _, saved = _read_state(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            _log.error("state file %s is unusable (%s); moving it to %s.bad and starting empty", path, e, path)
            with contextlib.suppress(OSError):
                os.replace(path, path + ".bad")
            return
        self._apply(saved, time.time(), time.monotonic())  # _watch drops the workers that are gone
        self.request_count = 0  # restored timers are not requests
        _log.info("restored %d of %d saved timers from %s", len(self._timers), len(saved), path)

    def _state_loop(self) -> None:
        """Write the state file when the timers change, at most ten times a second."""
        while self._state_changed.wait() and not self._state_stop.is_set():
            self._state_changed.clear()
            self._save_state()
            self._state_stop.wait(1 / _STATE_WRITES_PER_SECOND)

    def _save_state(self) -> None:
        with self._lock:  # two quick copies; the formatting and the disk work happen unlocked
            entries = list(self._timers.values())
            workers = dict(self._workers)
        snapshot = []
        for _, _, request in entries:
            worker = workers.get(request.worker_pid) if request is not None else None
            if request is not None and worker is not None:  # else released meanwhile
                snapshot.append(FileTimerRequest(request.worker_pid, request.scope_id, request.expiration_time,
                                                 request.signal, start_time=worker.start_time))
        assert self._state_file is not None
        try:
            _write_state(self._state_file, snapshot)
        except Exception:  # a full disk must stop neither the watchdog nor stop()
            _log.exception("could not write the state file %s", self._state_file)

    def _log_event(self, name: str, request: Optional[FileTimerRequest]) -> None:
        if self._log_event_cb is not None:
            try:
                self._log_event_cb(name, request)
            except Exception:
                _log.exception("log_event callback failed for %r", name)


# --- command line ---------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("expected a number of seconds >= 0, got %r" % text)
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number of seconds > 0, got %r" % text)
    return value


def _octal_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError("expected octal permission bits such as 600, got %r" % text)
    return value


def _signal_number(text: str) -> int:
    """TERM, SIGTERM, term and 15 all name SIGTERM; 0 means "report only"."""
    name = text.upper()
    number = int(name) if name.isdigit() else getattr(signal, name if name.startswith("SIG") else "SIG" + name, -1)
    if not (isinstance(number, int) and 0 <= number < _NSIG) or name.startswith(("SIG_", "SIGRT")):
        raise argparse.ArgumentTypeError("unknown signal %r" % text)
    return number


def _signal_name(number: int) -> str:
    if number == 0:
        return "none"
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _worker_pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= _PID_MAX:
        raise argparse.ArgumentTypeError("expected a process id of 2 or more, got %r" % text)
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="filetimer", description="Out-of-process watchdog for hung worker processes.")
    parser.add_argument("--version", action="version", version="filetimer " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    fifo_help = ("the FIFO (default: $FILETIMER_PATH, $TORCHELASTIC_TIMER_FILE, "
                 "else $XDG_RUNTIME_DIR/filetimer.fifo or <tmp>/filetimer-<uid>.fifo)")
    state_help = "the state file (default: beside the default FIFO, filetimer.state or filetimer-<uid>.state)"

    serve = commands.add_parser("serve", help="run a timer server on a FIFO", description="Run a timer server "
                                "until SIGINT or SIGTERM; the FIFO is removed on exit.")
    serve.set_defaults(run=_serve)
    serve.add_argument("path", nargs="?", help=fifo_help)
    serve.add_argument("--max-interval", type=_positive_seconds, default=10.0, metavar="S",
                       help="heartbeat interval in seconds (default 10); expiry does not depend on it")
    serve.add_argument("--run-id", default="", help="a name for this run, shown in events")
    serve.add_argument("--mode", type=_octal_mode, default=0o600, help="FIFO permissions in octal (default 600)")
    serve.add_argument("--kill-after", type=_seconds, metavar="S",
                       help="SIGKILL a signalled worker still alive after S seconds")
    serve.add_argument("--exit-on-reap", action="store_true",
                       help="signal this server's own process after reaping a worker (torch's behaviour)")
    serve.add_argument("--state-file", nargs="?", const=_default_state_path(), metavar="PATH",
                       help="keep the active timers in this file and re-arm them on restart; " + state_help)
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper, help="log level on stderr (default INFO)")
    serve.add_argument("--events", choices=["log", "json"], default="log",
                       help="events as log lines on stderr (default) or as JSON lines on stdout")

    exit_codes = "Exit status: 0 done, 2 bad arguments, 3 no server is reading the FIFO."
    acquire = commands.add_parser("acquire", help="arm a timer for a process (the calling shell by default)",
                                  description="Arm the timer SCOPE: if it is not released within SECONDS, the "
                                  "server signals the process.", epilog=exit_codes)
    acquire.set_defaults(run=_acquire)
    release = commands.add_parser("release", help="disarm a timer", description="Disarm the timer SCOPE.",
                                  epilog=exit_codes)
    release.set_defaults(run=_release)
    for command in (acquire, release):
        command.add_argument("--scope", required=True, help="the timer's name, unique within the process")
        if command is acquire:
            command.add_argument("--after", type=_seconds, required=True, metavar="SECONDS",
                                 help="seconds from now until the timer fires")
            command.add_argument("--signal", type=_signal_number, default=_SIGKILL, metavar="SIGNAL",
                                 help="signal name or number: KILL (default), TERM, SIGTERM, 15, ...")
        command.add_argument("--pid", type=_worker_pid, help="the process to watch (default: the parent process, "
                             "that is the shell that runs this command)")
        command.add_argument("--path", help=fifo_help)

    status = commands.add_parser("status", help="list the active timers from a server's state file",
                                 description="List the active timers of a server run with --state-file.",
                                 epilog="Exit status: 0 done, 1 no or unreadable state file.")
    status.set_defaults(run=_status)
    status.add_argument("--state-file", default=_default_state_path(), metavar="PATH", help=state_help)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s filetimer %(levelname)s %(message)s")

    def event(name: str, request: Optional[FileTimerRequest]) -> None:
        pid = request.worker_pid if request else None
        scope = request.scope_id if request else None
        sig = request.signal if request else None
        if args.events == "json":
            record = {"time": time.time(), "run_id": args.run_id, "event": name, "pid": pid, "scope": scope,
                      "signal": sig}
            print(json.dumps(record), flush=True)
        else:
            _log.info("event %r pid=%s scope=%r signal=%s", name, pid, scope, sig)

    server = FileTimerServer(args.path, run_id=args.run_id, max_interval=args.max_interval, log_event=event,
                             mode=args.mode, kill_after=args.kill_after, exit_on_reap=args.exit_on_reap,
                             state_file=args.state_file)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print("filetimer %s serving %s (pid %d)" % (__version__, server.file_path, os.getpid()),
          file=sys.stderr if args.events == "json" else sys.stdout, flush=True)
    stop.wait()
    server.stop()
    return 0


def _send_for(args: argparse.Namespace, expiration_time: float, sig: int) -> int:
    """Send one request on behalf of --pid (or the parent process), bound to its identity."""
    pid = args.pid or os.getppid()
    start_time = _process_start_time(pid)
    if start_time is None and not FileTimerServer.is_process_running(pid):
        raise ProcessLookupError("no process %d" % pid)
    with FileTimerClient(args.path, keep_open=False) as client:
        client._send_request(FileTimerRequest(pid, args.scope, expiration_time, sig, start_time=start_time))
    return 0


def _acquire(args: argparse.Namespace) -> int:
    return _send_for(args, time.time() + args.after, args.signal)


def _release(args: argparse.Namespace) -> int:
    return _send_for(args, -1, 0)


def _status(args: argparse.Namespace) -> int:
    try:
        written, timers = _read_state(args.state_file)
    except FileNotFoundError:
        print("filetimer: no state file at %s (is a server running with --state-file?)" % args.state_file,
              file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("filetimer: cannot read the state file %s: %s" % (args.state_file, e), file=sys.stderr)
        return 1
    now = time.time()
    timers.sort(key=lambda t: t.expiration_time)
    if args.json:
        rows = [{"pid": t.worker_pid, "scope": t.scope_id, "expiration_time": t.expiration_time,
                 "seconds_left": t.expiration_time - now, "signal": t.signal, "signal_name": _signal_name(t.signal)}
                for t in timers]
        print(json.dumps({"state_file": args.state_file, "written": written, "timers": rows}))
        return 0
    print("%d active timer%s (state written %.1f s ago)" % (len(timers), "" if len(timers) == 1 else "s",
                                                             now - written))
    if timers:
        width = max(5, *(len(t.scope_id) for t in timers))
        print("%8s  %-*s  %10s  %s" % ("PID", width, "SCOPE", "LEFT (s)", "SIGNAL"))
        for t in timers:
            print("%8d  %-*s  %10.1f  %s" % (t.worker_pid, width, t.scope_id, t.expiration_time - now,
                                            _signal_name(t.signal)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The ``python -m filetimer`` command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError as e:  # no server: a shell script may choose to carry on unguarded
        print("filetimer: error: %s" % e, file=sys.stderr)
        return 3
    except (OSError, ValueError) as e:
        print("filetimer: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
