# filetimer - an out-of-process watchdog for hung worker processes.
#
# MIT License
#
# Copyright (c) 2026 the filetimer authors
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
"""Kill worker processes that hang past their deadline.

A worker announces "this step must finish within N seconds"; a server (a
thread in a supervisor, or ``python -m filetimer serve``) signals the worker,
SIGKILL by default, if the step is still running when the time is up. It is
for the hangs an in-process timeout cannot break: C code, collectives,
deadlocks, blocking system calls. Just before the kill, the worker's Python
stacks are dumped to its stderr; a SIGKILL takes its child processes too.

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
import dataclasses
import errno
import faulthandler
import functools
import heapq
import inspect
import itertools
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
import weakref
from typing import (
    Any,
    BinaryIO,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    NoReturn,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
    cast,
)

__version__ = "0.2.0"
__all__ = ["FileTimerClient", "FileTimerRequest", "FileTimerServer", "configure", "expires"]

_log = logging.getLogger("filetimer")

# --- wire format ------------------------------------------------------------

PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)  # a write this size is atomic
VERSION = 1  # the only request version there is
_PID_MAX = 2**31 - 1  # largest pid_t
_SIGKILL: int = getattr(signal, "SIGKILL", 9)  # getattr: importable on Windows
_SIGSTOP: int = getattr(signal, "SIGSTOP", 19)
_NSIG: int = getattr(signal, "NSIG", 65)
# The signal a client asks to have its stacks dumped with (see _register_stack_dump).
_DUMP_SIGNAL: int = getattr(signal, "SIGUSR2", 0)
# signal.getsignal without its conversion to an enum, which cost 1 µs of every acquire.
_getsignal: Callable[[int], object] = getattr(signal, "_signal", signal).getsignal
_json_str = json.encoder.encode_basestring_ascii
# The C scanner, without json.loads' Python wrappers (typeshed does not declare scan_once).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_TIME_MAX = 2**63  # seconds; an int time beyond this is nonsense (and may not fit a float)


@dataclasses.dataclass
class FileTimerRequest:
    """One acquire or release, as carried on the wire; a negative ``expiration_time`` (epoch seconds) releases.

    Two optional hints travel as extra keys that torch's server ignores, and take no part in equality:
    ``start_time`` (from /proc/<pid>/stat) guards against pid reuse; ``dump_signal`` is the signal on which
    the worker dumps its stacks (0: it cannot).
    """

    worker_pid: int
    scope_id: str
    expiration_time: float
    signal: int = 0
    start_time: Optional[int] = dataclasses.field(default=None, compare=False, repr=False)
    dump_signal: int = dataclasses.field(default=0, compare=False, repr=False)
    version: int = dataclasses.field(default=VERSION, init=False)

    @property
    def worker_id(self) -> int:
        """The worker's pid, under the name torch's TimerRequest uses."""
        return self.worker_pid

    def to_json(self) -> str:
        """One wire line, without the newline."""
        return self._line()[:-1].decode("ascii")

    def _line(self) -> bytes:
        return _wire_line(self.worker_pid, self.scope_id, self.expiration_time, self.signal, self.start_time,
                          self.dump_signal)

    @classmethod
    def from_json(cls, line: Union[str, bytes]) -> "FileTimerRequest":
        """Parse and validate one wire line; ValueError if malformed. The server's hot path: one flat pass, no
        helper call when the line is good."""
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
        except RecursionError:  # 3.8-3.12 at ~1000 levels; 3.13 allows more than PIPE_BUF can hold
            raise ValueError("JSON nested too deeply") from None
        return cls._from_fields(obj)

    @classmethod
    def _from_fields(cls, obj: object) -> "FileTimerRequest":
        """Validate a decoded wire object (also used for the state file's timers)."""
        if type(obj) is not dict:
            raise ValueError("not a JSON object")
        get = obj.get
        version, pid, scope_id = get("version"), get("pid"), get("scope_id")
        expiration, sig, start_time, dump = get("expiration_time"), get("signal"), get("start_time"), get("dump_signal")
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
        if not (dump is None or (type(dump) is int and 0 <= dump < _NSIG)):
            raise _invalid("dump_signal", dump, "an integer from 0 to %d" % (_NSIG - 1))
        return cls(pid, scope_id, float(expiration), sig, start_time, dump or 0)


# %.17g writes a time as exactly as repr() (17 significant digits round-trip) for a third less;
# a whole number comes out without ".0" (as torch's -1 does), and from_json reads every time as a float.
_LINE = '{"version": %d, "pid": %d, "scope_id": %s, "expiration_time": %.17g, "signal": %d'


def _wire_line(pid: int, scope_id: str, expiration_time: float, sig: int, start_time: Optional[int] = None,
               dump_signal: int = 0) -> bytes:
    """A request as the newline-terminated bytes written to the FIFO, formatted by hand: json.dumps takes
    three times as long as the write itself."""
    expiration = float(expiration_time)
    if not math.isfinite(expiration):
        raise ValueError("expiration_time must be finite, got %r" % (expiration_time,))
    line = _LINE % (VERSION, pid, _json_str(scope_id), expiration, sig)
    if start_time is not None:
        line += ', "start_time": %d' % start_time
    if dump_signal:
        line += ', "dump_signal": %d' % dump_signal
    return (line + "}\n").encode("ascii")


_REQUEST_START = b'{"version"'  # how every client, ours and torch's, begins a request


def _request_inside(line: bytes) -> Optional[FileTimerRequest]:
    """The request a bad line ends with: a writer that died mid-line (or a hostile one) leaves a fragment in
    front of the next writer's whole line. Only bad lines pay for the search: a request holds no other raw
    ``{"version"`` (quotes in its strings are escaped), so it can only start at the last one: one try."""
    start = line.rfind(_REQUEST_START)
    if start > 0:
        with contextlib.suppress(ValueError):
            return FileTimerRequest.from_json(line[start:])
    return None


def _invalid(field: str, value: object, expected: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return ValueError("%s must be %s, got %s" % (field, expected, "nothing" if value is None else shown))


def _check_seconds(name: str, value: Any, positive: bool = False) -> None:
    """ValueError naming ``name`` unless value is a finite number of seconds, >= 0 (> 0 if ``positive``)."""
    try:
        valid = (value > 0 if positive else value >= 0) and value < math.inf and value is not True
    except TypeError:  # None, a string, ...
        valid = False
    if not valid:
        raise ValueError("%s must be a %s number of seconds, got %r"
                         % (name, "positive" if positive else "non-negative", value))


# --- OS helpers: paths, ownership, /proc ---------------------------------------------------------------------

_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")  # Linux 5.3+, Python 3.9+
_HAVE_PROC = os.path.isdir("/proc/self/task")  # Linux
# The kernel lists a thread's children where it is built with CONFIG_PROC_CHILDREN; else /proc is scanned.
_HAVE_PROC_CHILDREN = os.path.exists("/proc/self/task/%d/children" % os.getpid())
_GONE = (errno.ENOENT, errno.ESRCH)  # what /proc answers about a process (or thread) that has exited


def _require_posix() -> None:
    if not hasattr(os, "mkfifo"):
        raise OSError("filetimer needs named pipes and POSIX signals; %s has neither" % sys.platform)


def _default_path() -> str:
    """$XDG_RUNTIME_DIR/filetimer.fifo, else <tempdir>/filetimer-<uid>/filetimer.fifo (a private directory)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "filetimer.fifo")
    return os.path.join(tempfile.gettempdir(), "filetimer-%d" % os.geteuid(), "filetimer.fifo")


def _resolve_path(file_path: Optional[str]) -> str:
    """The FIFO path: the argument, $FILETIMER_PATH, $TORCHELASTIC_TIMER_FILE or the default."""
    return (file_path or os.environ.get("FILETIMER_PATH") or os.environ.get("TORCHELASTIC_TIMER_FILE")
            or _default_path())


def _owner_name(uid: int) -> str:
    try:
        import pwd
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except (ImportError, KeyError):
        return "uid %d" % uid


def _check_owner(path: str, st: os.stat_result, what: str) -> None:
    """Refuse what another user (not us, not root) owns: its owner could read or redirect our timers."""
    if st.st_uid not in (os.geteuid(), 0):
        raise PermissionError(errno.EPERM, "%s %s is owned by %s, not by you or root; refusing to use it"
                              % (what, path, _owner_name(st.st_uid)))


def _read_proc(path: str) -> bytes:
    """A /proc file's contents, in fewer system calls than open() makes (it adds fstat and ioctl)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
    finally:
        os.close(fd)


def _proc_stat(pid: int) -> Tuple[int, int]:
    """(parent pid, start time in clock ticks since boot) of a process, from /proc (Linux); OSError if unknown."""
    try:
        stat_line = _read_proc("/proc/%d/stat" % pid)
        # Fields 4 and 22; the command name (field 2) may hold spaces and parentheses.
        fields = stat_line[stat_line.rindex(b")") + 2 :].split()
        return int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        raise ProcessLookupError(errno.ESRCH, "unreadable /proc/%d/stat" % pid) from None


def _process_start_time(pid: int) -> Optional[int]:
    """Start time of pid in clock ticks since boot (Linux), or None if unknown."""
    try:
        return _proc_stat(pid)[1]
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (0 and negative pids never do)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # it exists, it just isn't ours
    except OSError:
        return False
    return True


def _signal_name(number: int) -> str:
    if number == 0:
        return "none"
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _check_directory(path: str) -> None:
    """Refuse a FIFO directory that another user controls; make the private default one if missing."""
    directory = os.path.dirname(os.path.abspath(path))
    private = not os.environ.get("XDG_RUNTIME_DIR") and directory == os.path.dirname(_default_path())
    if private:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    try:
        st = os.lstat(directory) if private else os.stat(directory)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the directory of %s does not exist" % path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "%s is not a directory" % directory)
    if private and (st.st_uid != os.geteuid() or st.st_mode & 0o077):
        raise PermissionError(errno.EPERM, "%s must be a directory owned by you with mode 0700 (it is owned by %s, "
                              "mode %03o); remove it or set FILETIMER_PATH"
                              % (directory, _owner_name(st.st_uid), st.st_mode & 0o777))
    _check_owner(directory, st, "the directory")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(errno.EPERM, "other users may replace files in %s (mode %03o, no sticky bit); "
                              "choose a directory only you can write" % (directory, st.st_mode & 0o777))


def _fifo_has_reader(path: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)
    return True


# --- client ---------------------------------------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _retry(sleep_time: float) -> Callable[[Callable[[Any], int]], Callable[..., int]]:
    """The card's retry decorator, for the client's open: while no server reads the FIFO (BrokenPipeError),
    try again ``sleep_time`` apart for up to the client's ``connect_timeout``; ``wait=False`` tries once."""

    def decorate(func: Callable[[Any], int]) -> Callable[..., int]:
        @functools.wraps(func)
        def wrapper(client: Any, wait: bool = True) -> int:
            tries = max(1, round(client._connect_timeout / sleep_time)) if wait else 1
            for _ in range(tries - 1):
                try:
                    return func(client)
                except BrokenPipeError:
                    time.sleep(sleep_time)
            return func(client)

        return wrapper

    return decorate


def _served_by_filetimer(fd: int) -> bool:
    """Whether a filetimer server reads this FIFO: it holds an exclusive flock on its end, torch's none."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except (ImportError, OSError):  # no flock here: write and close, which every server reads
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _register_stack_dump() -> int:
    """Have faulthandler dump every thread's stack to stderr on _DUMP_SIGNAL; return it, or 0. Only where the
    signal has its default action (an application's handler stays); it dumps from C, GIL held or not."""
    global _dump_fd
    if not _DUMP_SIGNAL or signal.getsignal(_DUMP_SIGNAL) is not signal.SIG_DFL or sys.stderr is None:
        return 0
    try:
        if _dump_fd is None:  # a copy: the dump goes to this stderr even if fd 2 is later closed and reused
            _dump_fd = os.dup(sys.stderr.fileno())
        faulthandler.register(_DUMP_SIGNAL, file=_dump_fd, all_threads=True, chain=False)
    except (AttributeError, RuntimeError, ValueError, OSError):  # no register() (Windows), no stderr fd
        return 0
    return _DUMP_SIGNAL


_dump_fd: Optional[int] = None  # where this process's stack dumps go
_clients: "weakref.WeakSet[FileTimerClient]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child gets fresh client locks and no inherited handles: no hang on a lock held at the fork."""
    for client in list(_clients):
        client._lock = threading.RLock()
        client._kept.clear()  # the parent's releases: the parent delivers them
        client._sending = False
        client._deliverer = None
        client.close()  # the parent's handles, maybe mid-write: the child opens its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FileTimerClient:
    """Sends timer requests for the calling process to a FileTimerServer. Fork-safe.

    The FIFO is held open between requests when a filetimer server reads it (it holds a flock on its end),
    else opened per request: torch's server reads at end-of-file only (``keep_open`` forces either). A server
    that is away is waited for ``connect_timeout`` s; then ``acquire`` raises BrokenPipeError, while a
    ``release`` is kept and delivered, in order, once a server reads again. A pipe full for ``timeout`` s
    raises TimeoutError; another user's FIFO, PermissionError. With ``dump_stacks`` the worker dumps its
    stacks to stderr when signalled just before a kill.
    """

    def __init__(self, file_path: Optional[str] = None, signal: int = _SIGKILL, *, timeout: float = 10.0,
                 keep_open: Optional[bool] = None, dump_stacks: bool = True, connect_timeout: float = 1.0) -> None:
        _require_posix()
        _check_seconds("timeout", timeout)
        _check_seconds("connect_timeout", connect_timeout)
        self._file_path = _resolve_path(file_path)
        self.signal = signal
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keep_open = keep_open  # None: not decided yet
        self._per_fifo = keep_open is None  # decided again for each FIFO (dev, ino) it opens
        self._fifo: Optional[Tuple[int, int]] = None  # the one it decided for
        self._dump_signal = _register_stack_dump() if dump_stacks else 0
        self._fd: Optional[int] = None  # held only while keeping the FIFO open
        self._stale_fd: Optional[int] = None  # kept open, its server gone: its unread lines await the next one
        self._kept: Dict[str, bytes] = {}  # lines no server has read yet, by scope, oldest first
        self._deliverer: Optional[threading.Thread] = None  # retries the kept lines
        self._sending = False  # inside _deliver: a send from a signal handler goes alone
        self._lock = threading.RLock()  # guards the above; reentrant for a signal handler that sends
        self._pid = 0  # and its start time: read on the first request, and again in a forked child
        self._start_time: Optional[int] = None
        _clients.add(self)

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        """Arm (or re-arm) the timer ``scope_id`` to fire at wall-clock ``expiration_time``."""
        self._send(scope_id, expiration_time, self.signal, self._promises_dump())

    def release(self, scope_id: str) -> None:
        """Disarm the timer ``scope_id``; with no server reading, it is delivered when one reads again."""
        self._send(scope_id, -1, 0, False, later=True)

    def _promises_dump(self) -> bool:
        """Whether the stack dump is still ours to promise: not if the application has taken the signal since."""
        return bool(self._dump_signal) and _getsignal(self._dump_signal) == signal.SIG_DFL

    def close(self) -> None:
        """Close a held FIFO handle; a later request opens it again."""
        with self._lock:
            for fd in (self._fd, self._stale_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):  # gone already (a forked child's: the parent was closing it)
                        os.close(fd)
            self._fd = self._stale_fd = None

    def __enter__(self) -> "FileTimerClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, scope_id: str, expiration_time: float, sig: int, dump: bool, later: bool = False) -> None:
        if self._pid != os.getpid():  # first request, or a forked child
            self._pid, self._start_time = os.getpid(), _process_start_time(os.getpid())
        line = _wire_line(self._pid, scope_id, expiration_time, sig, self._start_time,
                          self._dump_signal if dump else 0)
        self._send_line(line, scope_id if later else None, scope_id)

    def _send_line(self, line: bytes, later: Optional[str] = None, scope: Optional[str] = None) -> None:
        """Write one line (of ``scope``, if given), after any kept ones. A line sent ``later`` (its scope given)
        that no server reads now is kept, without waiting for a server; any other raises BrokenPipeError."""
        if len(line) > PIPE_BUF:
            raise ValueError("request of %d bytes exceeds PIPE_BUF (%d): scope_id too long" % (len(line), PIPE_BUF))
        retry = later is None
        try:
            if self._kept or self._keep_open is not False:
                with self._lock:
                    self._deliver(line, retry, scope or later)
            else:
                os.close(self._write_line(None, line, retry))
            return
        except BrokenPipeError:
            if later is None:
                raise
        with self._lock:
            self._kept.pop(later, None)  # an older line of the scope is superseded
            self._kept[later] = line
            if self._deliverer is None:
                self._deliverer = threading.Thread(target=self._deliver_kept, name="filetimer-client", daemon=True)
                self._deliverer.start()

    def _deliver(self, line: Optional[bytes], retry: bool, scope: Optional[str] = None) -> None:
        """Write the kept lines, then ``line``, in order (lock held); BrokenPipeError if no server reads. A signal
        handler that interrupted this very delivery sends on a handle of its own, or takes the place of a kept
        line of its scope still to go."""
        if self._sending:
            if line is not None and scope in self._kept:
                self._kept[scope] = line
            elif line is not None:
                os.close(self._write_line(None, line, retry))
            return
        self._sending = True
        try:
            fd, self._fd = self._fd, None
            while self._kept:
                kept_scope, kept = next(iter(self._kept.items()))
                fd = self._write_line(fd, kept, retry, bool(self._keep_open))
                if self._kept.get(kept_scope) is kept:  # else a signal handler replaced it meanwhile: next
                    del self._kept[kept_scope]
            if line is not None:
                fd = self._write_line(fd, line, retry, bool(self._keep_open))
            if fd is not None and self._keep_open:
                self._fd = fd
            elif fd is not None:
                os.close(fd)
        finally:
            self._sending = False

    def _deliver_kept(self) -> None:
        """Retry the kept lines, backing off to ten times a second, until a server has read them all."""
        delay = 0.01
        while True:
            time.sleep(delay)
            delay = min(2 * delay, 0.1)  # a restarted server waits _RESTORE_GRACE for these
            with self._lock:
                if self._deliverer is not threading.current_thread():  # a forked child's copy of the client
                    return
                try:
                    self._deliver(None, retry=False)
                except OSError as e:  # no server yet (or a full pipe): later
                    _log.debug("delivering %d kept requests: %s", len(self._kept), e)
                if not self._kept:
                    self._deliverer = None
                    return

    def _write_line(self, fd: Optional[int], line: bytes, retry: bool = True, hold: bool = False) -> int:
        """Write one whole line on fd (opened if None) and return the fd; the fd is closed on failure. Waits out
        a full pipe; reopens once if the server that had it open is gone. Without ``retry`` an absent server is
        not waited for. With ``hold`` (lock held) a pipe whose server went away stays open until a server reads
        again: what the dead one had not read survives in it."""
        deadline = None
        reopened = False
        while True:
            if fd is None:
                fd = self._open(retry)
            try:
                os.write(fd, line)  # all or nothing: len(line) <= PIPE_BUF
                if hold and self._stale_fd is not None:  # a server reads again: that pipe's lines are read, or lost
                    os.close(self._stale_fd)
                    self._stale_fd = None
                return fd
            except BlockingIOError:
                if deadline is None:
                    deadline = time.monotonic() + self._timeout
                if not self._wait_writable(fd, deadline):
                    os.close(fd)
                    raise TimeoutError("the filetimer server at %s did not read its pipe for %.1f s"
                                       % (self._file_path, self._timeout)) from None
            except BrokenPipeError:
                if hold:
                    fd, self._stale_fd = self._stale_fd, fd
                if fd is not None:
                    os.close(fd)
                fd = None
                if reopened:
                    raise BrokenPipeError("the filetimer server reading %s went away" % self._file_path) from None
                reopened = True
            except BaseException:
                os.close(fd)
                raise

    @_retry(sleep_time=0.1)
    def _open(self) -> int:
        """Open the FIFO for writing, and on a new FIFO decide whether to keep it open; BrokenPipeError if no
        server reads it, PermissionError if another user owns it."""
        try:
            # Non-blocking: with no reader the open fails (ENXIO) instead of hanging.
            fd = os.open(self._file_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno not in (errno.ENXIO, errno.ENOENT):
                raise
            if e.errno == errno.ENXIO:  # another user's FIFO is refused, read or not
                with contextlib.suppress(FileNotFoundError):
                    _check_owner(self._file_path, os.stat(self._file_path), "the FIFO")
            raise BrokenPipeError(errno.EPIPE, "no server is reading %s%s" % (
                self._file_path, "" if e.errno == errno.ENXIO else " (it does not exist)")) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISFIFO(st.st_mode):
                raise OSError(errno.EINVAL, "%s is not a FIFO" % self._file_path)
            _check_owner(self._file_path, st, "the FIFO")
            if self._per_fifo and self._fifo != (st.st_dev, st.st_ino):
                self._fifo = (st.st_dev, st.st_ino)
                self._keep_open = _served_by_filetimer(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _wait_writable(self, fd: int, deadline: float) -> bool:
        """Wait until the pipe has room; False once the deadline has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            sel.select(remaining)
        return True


_configured_client: Optional[FileTimerClient] = None


def configure(client: FileTimerClient) -> None:
    """Set the client that ``expires`` uses when none is passed to it."""
    global _configured_client
    _configured_client = client


# --- expires ------------------------------------------------------------------------------------------------

class _Timer:
    """A timer armed by ``expires``; ``reset()`` re-arms it, a progress watchdog."""

    __slots__ = ("after", "client", "deadline", "nest", "outer", "scope")

    def __init__(self, client: FileTimerClient, scope: str, after: float, nest: Dict[str, "_Timer"]) -> None:
        self.client = client
        self.scope = scope
        self.after = after
        self.deadline = time.time() + after
        self.nest = nest  # the innermost timers by scope of the thread that armed it
        self.outer = nest.get(scope)  # the armed timer of the same scope this one is nested in

    def reset(self, after: Optional[float] = None) -> None:
        """Re-arm to now + ``after`` (default: the ``after`` it was armed with): one request."""
        if after is not None:
            _check_seconds("after", after, positive=True)
        self.deadline = time.time() + (self.after if after is None else after)
        self.client.acquire(self.scope, self.deadline)


class _Nesting(threading.local):
    """Per thread: the innermost timer ``expires`` holds armed, by scope, and the suffix of default scopes (kept
    in a child it forks, so the blocks it is inside still find their timers)."""

    def __init__(self) -> None:
        self.innermost: Dict[str, _Timer] = {}
        ident = threading.get_ident()  # not current_thread(): that would leave a _DummyThread for a C thread
        self.suffix = "" if ident == threading.main_thread().ident else "@%d" % ident


_nesting = _Nesting()


class expires:
    """Arm a timer that fires ``after`` seconds from now; release it on exit, even on an exception.

    A context manager (``with`` and ``async with``; entering returns the timer, whose ``reset()`` re-arms it)
    and a decorator for plain and ``async def`` functions, each call with its own timer. The default scope is
    the caller's ``file#line``, distinct per thread and per asyncio task. Nested use of one scope (recursion)
    re-arms it; the inner exit re-arms the enclosing timer to the later of its deadline and now + its
    ``after``, and only the outermost exit releases it.
    """

    __slots__ = ("_after", "_client", "_entered", "_per_thread", "_scope")

    def __init__(self, after: float, scope: Optional[str] = None, client: Optional[FileTimerClient] = None) -> None:
        _check_seconds("after", after, positive=True)
        self._entered: List[_Timer] = []  # armed by this object and not yet exited
        self._per_thread = scope is None
        if scope is None:
            caller = sys._getframe(1)
            scope = "%s#%d" % (caller.f_code.co_filename, caller.f_lineno)
        self._after = after
        self._scope = scope
        self._client = client

    def _copy(self) -> "expires":
        """One call's own context: calls of a decorated function overlap in threads and tasks."""
        fresh = expires(self._after, self._scope, self._client)
        fresh._per_thread = self._per_thread
        return fresh

    def _thread_scope(self) -> str:
        """The scope on the wire: the default one names the thread and asyncio task, but for the main thread's."""
        if not self._per_thread:
            return self._scope
        asyncio = sys.modules.get("asyncio")  # only looked at if the program imported it
        if asyncio is not None and asyncio._get_running_loop() is not None:
            return "%s@%d/task-%x" % (self._scope, threading.get_ident(), id(asyncio.current_task()))
        return self._scope + _nesting.suffix

    def __enter__(self) -> _Timer:
        client = self._client or _configured_client
        if client is None:
            raise RuntimeError("filetimer: no client; call filetimer.configure(FileTimerClient(...)) first")
        scope = self._thread_scope()
        nest = _nesting.innermost
        timer = _Timer(client, scope, self._after, nest)
        client.acquire(scope, timer.deadline)
        nest[scope] = timer
        self._entered.append(timer)
        return timer

    def __exit__(self, *exc_info: object) -> None:
        # The scope entered, whichever task or thread exits (an async generator closed by the loop in a task of
        # its own, __exit__ called elsewhere). An object entered in several at once: this one's, if it is there.
        entered = self._entered
        timer = entered.pop()
        if entered and timer.scope != self._thread_scope():
            scope = self._thread_scope()
            for i in range(len(entered) - 1, -1, -1):
                if entered[i].scope == scope:
                    timer, entered[i] = entered[i], timer
                    break
        scope, nest, outer = timer.scope, timer.nest, timer.outer
        if nest.get(scope) is timer:
            del nest[scope]
        if outer is None:
            timer.client.release(scope)
            return
        nest[scope] = outer  # the enclosing block of the same scope: guarded again, never less than torch
        outer.deadline = max(outer.deadline, time.time() + outer.after)
        client = outer.client  # re-armed later if no server reads now, as a release would be
        client._send(scope, outer.deadline, client.signal, client._promises_dump(), later=True)

    async def __aenter__(self) -> _Timer:
        return self.__enter__()  # the scope names the running task

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()

    def __call__(self, func: _F) -> _F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError("expires cannot guard the generator function %s: its body runs after the call returns;"
                            " guard the loop body instead (with expires(...): inside the loop)" % func.__qualname__)
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def guarded_coroutine(*args: Any, **kwargs: Any) -> Any:
                async with self._copy():
                    return await func(*args, **kwargs)

            return cast(_F, guarded_coroutine)

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with self._copy():
                return func(*args, **kwargs)

        return cast(_F, guarded)


# --- the server's timers: watched workers, their armed timers, signals due ---------------------------------

_LOGS_PER_MINUTE = 10  # of one kind (rejected lines, refused timers, ...); the rest are counted


class _LogLimit:
    """At most a few log records of one kind a minute; the others are counted and their number logged later."""

    __slots__ = ("seen", "what", "window_end")

    def __init__(self, what: str) -> None:
        self.what = what
        self.seen = 0  # in this window
        self.window_end = 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        if now >= self.window_end:
            if self.seen > _LOGS_PER_MINUTE:
                _log.warning("%d more %s were not logged", self.seen - _LOGS_PER_MINUTE, self.what)
            self.window_end, self.seen = now + 60, 0
        self.seen += 1
        return self.seen <= _LOGS_PER_MINUTE


def _start_time_now(pid: int) -> Optional[int]:
    """The start time of ``pid`` (Linux); None if it has exited, or without /proc; OSError if unreadable now."""
    if not _HAVE_PROC:
        return None
    try:
        return _proc_stat(pid)[1]
    except OSError as e:
        if e.errno in _GONE:
            return None
        raise


class _Worker:
    """A watched process and its armed timers, bound to its identity so that a reused pid is never signalled:
    a pidfd where the platform has one, and the start time from /proc (macOS has neither: only the pid).
    Where the identity cannot be read now (the fd limit, a /proc error), OSError is raised: such a process is
    neither watched nor signalled."""

    __slots__ = ("pid", "pidfd", "start_time", "timers")

    def __init__(self, pid: int, pidfd: Optional[int], start_time: Optional[int]) -> None:
        self.pid, self.pidfd, self.start_time = pid, pidfd, start_time
        self.timers: Dict[str, _Armed] = {}  # by scope

    @classmethod
    def attach(cls, pid: int, claimed_start_time: Optional[int] = None, pidfd_wanted: bool = True) -> Optional[_Worker]:
        """The running process ``pid``, or None if it is gone or not the one that claims it."""
        pidfd = None
        if _HAVE_PIDFD and pidfd_wanted:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            except OSError:  # EMFILE, an old kernel, ...: the start time alone
                pidfd = None
        try:
            start_time = _start_time_now(pid)
        except OSError:
            if pidfd is None or claimed_start_time is not None:  # nothing to bind to, or a claim to check
                if pidfd is not None:
                    os.close(pidfd)
                raise
            start_time = None  # the pidfd is identity enough
        worker = cls(pid, pidfd, start_time)
        if ((pidfd is None and start_time is None and _HAVE_PROC) or not worker.is_alive()
                or (claimed_start_time is not None and start_time is not None and claimed_start_time != start_time)):
            worker.close()
            return None
        return worker

    def is_alive(self) -> bool:
        """Still running and still the same process; OSError if that cannot be told now."""
        if self.pidfd is not None:  # readable once the process has exited
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            return not poller.poll(0)
        if self.start_time is not None:
            return _start_time_now(self.pid) == self.start_time
        return _pid_exists(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.pidfd is not None:
            signal.pidfd_send_signal(self.pidfd, sig)
            return
        try:
            alive = self.is_alive()
        except OSError as e:
            raise OSError(e.errno, "cannot verify that pid %d is still the same process (%s); not signalled"
                          % (self.pid, e.strerror or e)) from None
        if not alive:
            raise ProcessLookupError(errno.ESRCH, "process %d has exited" % self.pid)
        os.kill(self.pid, sig)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class _Armed:
    """An armed timer: its monotonic deadline and its request's fields; ``worker`` is None once it is released,
    replaced or fired (its heap entry is then skipped)."""

    __slots__ = ("deadline", "dump_signal", "expiration_time", "scope", "signal", "worker")

    def __init__(self, worker: _Worker, scope: str, deadline: float, request: FileTimerRequest) -> None:
        self.worker: Optional[_Worker] = worker
        self.scope = scope
        self.deadline = deadline
        self.expiration_time = request.expiration_time
        self.signal = request.signal
        self.dump_signal = request.dump_signal

    def __lt__(self, other: "_Armed") -> bool:
        return False  # in a heap entry (deadline, scope, timer): the same deadline and scope, either may go first

    def request(self, worker: _Worker) -> FileTimerRequest:
        """The request that armed it, as its worker's."""
        return FileTimerRequest(worker.pid, self.scope, self.expiration_time, self.signal, worker.start_time,
                                self.dump_signal)


class _Due(NamedTuple):
    """A signal due later (monotonic ``when``): the kill after a stack dump, or SIGKILL ``kill_after`` a signal."""

    when: float
    signal: int
    request: FileTimerRequest
    event: str


def _record(kind: str, **fields: object) -> bytes:
    """One of the server's own state-file lines (a wire request's line is kept as it came)."""
    return json.dumps(dict(record=kind, **fields)).encode("ascii") + b"\n"


_Entry = Tuple[float, str, _Armed]  # in a heap: the scope breaks ties in C (a batch often shares its deadline)


class _Timers:
    """The server's bookkeeping, guarded by its lock: the watched workers with their armed timers, two heaps
    of these by deadline (those that signal, and report-only ones, which must never delay a kill), and the
    signals due later. A release or re-arm leaves the old entry disarmed in its heap, rebuilt once mostly
    such; ``records`` are the state-file lines its changes owe the journal.
    """

    def __init__(self, selector: selectors.BaseSelector, max_per_pid: int, max_total: int) -> None:
        self.workers: Dict[int, _Worker] = {}
        self.heap: List[_Entry] = []
        self.quiet: List[_Entry] = []  # report-only timers (signal 0)
        self.count = 0  # armed timers
        self.due: Dict[int, _Due] = {}  # by pid
        self.records: List[bytes] = []
        self.replaying = False  # a restart's replay: nothing to say about processes gone meanwhile
        self.max_per_pid, self.max_total = max_per_pid, max_total
        self._selector = selector  # watches the workers' pidfds
        self._refuse_log = _LogLimit("refused timers")
        self._ignore_log = _LogLimit("timers of processes that are gone")

    def apply(self, requests: Iterable[FileTimerRequest], wall_now: float, mono_now: float) -> int:
        """Arm, re-arm or release each request's timer, in order; return how many (the ingest hot path)."""
        workers, heap, quiet = self.workers, self.heap, self.quiet
        applied = 0
        for request in requests:
            applied += 1
            worker = workers.get(request.worker_pid)
            if worker is None or request.start_time not in (None, worker.start_time):
                if request.expiration_time < 0:  # for no process watched: nothing to release
                    continue
                worker = self.watch(request)  # None if it names an earlier process at this pid: its timers stay
                if worker is None:
                    continue
            scope, timers = request.scope_id, worker.timers
            old = timers.pop(scope, None)
            if old is not None:
                old.worker = None
                self.count -= 1
            if request.expiration_time < 0:
                continue
            if old is None and (len(timers) >= self.max_per_pid or self.count >= self.max_total):
                self._refuse(request, len(timers) >= self.max_per_pid)
                continue
            # Converted once, on arrival: a wall-clock step later changes nothing.
            timer = _Armed(worker, scope, mono_now + (request.expiration_time - wall_now), request)
            timers[scope] = timer
            self.count += 1
            heapq.heappush(heap if timer.signal else quiet, (timer.deadline, scope, timer))
        if len(heap) + len(quiet) > 2 * self.count + 1024:  # mostly disarmed entries
            self.rebuild_heaps()
        return applied

    def rebuild_heaps(self) -> None:
        """The heaps of the armed timers alone, from their deadlines now."""
        armed = [(timer.deadline, timer.scope, timer) for _, timer in self.armed()]
        self.heap = [entry for entry in armed if entry[2].signal]
        self.quiet = [entry for entry in armed if not entry[2].signal]
        heapq.heapify(self.heap)
        heapq.heapify(self.quiet)

    def armed(self) -> Iterator[Tuple[_Worker, _Armed]]:
        for worker in self.workers.values():
            for timer in worker.timers.values():
                yield worker, timer

    def _refuse(self, request: FileTimerRequest, per_pid: bool) -> None:
        """A timer over a cap: not armed, and said so (a few times a minute)."""
        if self._refuse_log.allow():
            _log.warning("refusing a timer for pid %d (scope %r): %s", request.worker_pid, request.scope_id,
                         "it has %d timers, max_timers_per_pid" % self.max_per_pid if per_pid
                         else "the server holds %d timers, max_timers" % self.max_total)

    def watch(self, request: FileTimerRequest) -> Optional[_Worker]:
        """The worker record for the request's pid, made on first sight; None if it is gone."""
        pid = request.worker_pid
        worker = self.workers.get(pid)
        if worker is not None:
            if request.start_time is None or worker.start_time in (None, request.start_time):
                return worker
            try:
                alive = worker.is_alive()
            except OSError as e:
                self._unverified(pid, e)
                return None
            if alive:  # the request names an earlier process that had this pid
                self._ignore(pid, "it names a process that has exited")
                return None
            self.forget(worker)  # the pid now belongs to the process the request names
        if pid <= 1:
            if self._refuse_log.allow():
                _log.error("refusing a timer for pid %d: it names a process group or init", pid)
            return None
        try:
            worker = _Worker.attach(pid, request.start_time)
        except OSError:
            self.forget_idle()  # their pidfds; then once more
            try:
                worker = _Worker.attach(pid, request.start_time)
            except OSError as e:
                self._unverified(pid, e)
                return None
        if worker is None:
            self._ignore(pid, "the process is gone")
            return None
        self.workers[pid] = worker
        if request.start_time is None and worker.start_time is not None and not self.replaying:
            self.records.append(_record("identity", pid=pid, start_time=worker.start_time))  # torch sends none
        if worker.pidfd is not None:
            self._selector.register(worker.pidfd, selectors.EVENT_READ, worker)
        return worker

    def _unverified(self, pid: int, error: OSError) -> None:
        """Refuse a timer whose process cannot be identified now: it could not be signalled safely."""
        if self._refuse_log.allow():
            _log.error("refusing a timer for pid %d: cannot verify which process it is (%s)", pid, error)

    def _ignore(self, pid: int, why: str) -> None:
        if not self.replaying and self._ignore_log.allow():
            _log.info("ignoring a timer for pid %d: %s", pid, why)

    def forget_idle(self) -> None:
        """Let go of the workers with no timer armed and no signal due: a pidfd is held only while needed."""
        for worker in list(self.workers.values()):
            if not worker.timers and worker.pid not in self.due:
                self.forget(worker)

    def forget(self, worker: _Worker) -> None:
        """Drop an exited worker: its timers, its signal due and its pidfd."""
        if worker.timers or worker.pid in self.due:
            self.records.append(_record("drop", pid=worker.pid, start_time=worker.start_time))  # gone for status too
        self.disarm(worker)
        self.due.pop(worker.pid, None)
        if self.workers.get(worker.pid) is worker:
            del self.workers[worker.pid]
        if worker.pidfd is not None:
            self._selector.unregister(worker.pidfd)
            worker.close()

    def disarm(self, worker: _Worker) -> None:
        """Drop every timer of the worker."""
        for timer in worker.timers.values():
            timer.worker = None
        self.count -= len(worker.timers)
        worker.timers.clear()

    def next_deadline(self) -> float:
        """The monotonic time of the nearest timer or signal due (inf if none)."""
        deadline = math.inf
        for heap in (self.heap, self.quiet):
            while heap and heap[0][2].worker is None:  # disarmed
                heapq.heappop(heap)
            if heap:
                deadline = min(deadline, heap[0][0])
        return min(deadline, *(due.when for due in self.due.values())) if self.due else deadline

    def pop_expired(self, now: float) -> Dict[_Worker, List[_Armed]]:
        """The expired timers that signal, by worker, each with its report-only ones due too; all dropped."""
        expired: Dict[_Worker, List[_Armed]] = {}
        heap = self.heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.worker is not None:
                expired.setdefault(timer.worker, []).append(timer)
        for worker, timers in expired.items():
            timers += [timer for timer in worker.timers.values() if timer.deadline <= now and not timer.signal]
            self.disarm(worker)
        return expired

    def pop_quiet(self, now: float, limit: int) -> List[Tuple[_Worker, _Armed]]:
        """The expired report-only timers among the next ``limit`` entries of their heap, dropped."""
        expired = []
        quiet = self.quiet
        for _ in range(limit):
            if not (quiet and quiet[0][0] <= now):
                break
            timer = heapq.heappop(quiet)[2]
            worker = timer.worker
            if worker is not None:
                del worker.timers[timer.scope]
                timer.worker = None
                self.count -= 1
                expired.append((worker, timer))
        return expired

    def clear(self, pids: Iterable[int]) -> None:
        """Drop the timers and the signal due of each of these pids (torch's clear_timers)."""
        for pid in pids:
            worker = self.workers.get(pid)
            if worker is not None:
                self.disarm(worker)
                self.due.pop(pid, None)
                self.records.append(_record("drop", pid=pid))

    def forget_exited(self, workers: Iterable[_Worker]) -> None:
        """Forget those of ``workers`` that have exited (one whose state cannot be read now is kept)."""
        for worker in list(workers):
            with contextlib.suppress(OSError):
                if not worker.is_alive():
                    self.forget(worker)


# --- the state file: a journal replayed on a restart --------------------------------------------------------

_STATE_HEAD = b'{"format": "filetimer-state"'  # how every state file we write begins
_STATE_VERSION = 2
_MAX_TIMERS = 1_000_000  # more than any real workload; a state file may restore no more
# A record is a request and a few fields more; a journaled line, under PIPE_BUF carried over plus one read of
# _READ_SIZE (a bad one, whose request at its end ingest salvaged: so does the replay).
_STATE_LINE_MAX = PIPE_BUF + 8192
_STATE_MAX_BYTES = 3 * _MAX_TIMERS * _STATE_LINE_MAX  # a file larger than that is nobody's state
_COMPACT_MIN_BYTES = 1 << 20  # of appended lines before a rewrite is worth its cost
_RESTORE_GRACE = 0.3  # seconds a restarted server waits before firing restored timers: kept releases arrive


def _check_private_file(path: str, st: os.stat_result) -> None:
    """Refuse a state file another user could have written or planted."""
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(errno.EEXIST, "state file %s is not a regular file; refusing to use it" % path)
    if st.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, "state file %s is owned by %s, not by the server's user; refusing to "
                              "use it" % (path, _owner_name(st.st_uid)))
    if st.st_mode & 0o022:
        raise PermissionError(errno.EPERM, "state file %s is writable by others (mode %03o); refusing to use it"
                              % (path, st.st_mode & 0o777))


class _StateFile:
    """The server's durable state: a header line, then lines replayed in order on a restart.

    The lines are wire requests, each batch read from the FIFO appended with one write before it is applied, and
    the server's own records (a worker's start time, a signal due later, a worker reaped for the last time):
    what the server read survives its crash at once. When the appended part outgrows the last rewrite, the
    file is rewritten from the live state (a private file beside it, renamed over it): the cost follows the
    bytes received, not the size of the table. Only files of the server's user are read or written.
    """

    def __init__(self, path: str, fifo: str) -> None:
        self.path = os.path.abspath(path)
        self.fifo = os.path.abspath(fifo)
        self.fd = -1  # for appending, once written
        self.size = 0  # bytes in the file
        self.rewritten = 0  # bytes written by the last rewrite
        self.broken = False  # an append failed: only a rewrite makes the file whole again
        self.backlog: List[bytes] = []  # what was not appended since, for the rewrite to add
        self.abandoned = False  # by stop() from the watchdog's own pass: a rewrite under way is dropped
        _check_directory(self.path)

    def open_saved(self) -> Optional[BinaryIO]:
        """The saved file of this FIFO, read up to its first record; None if there is none. FileExistsError or
        PermissionError if it is not ours to use (never touched then); ValueError if ours but unreadable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise FileExistsError(errno.EEXIST, "state file %s is a symbolic link; refusing to follow it"
                                      % self.path) from None
            raise
        try:
            st = os.fstat(fd)
            _check_private_file(self.path, st)
            if st.st_size > _STATE_MAX_BYTES:
                raise OSError(errno.EFBIG, "state file %s holds %d bytes, more than %d timers could need; "
                              "refusing to read it" % (self.path, st.st_size, _MAX_TIMERS))
        except BaseException:
            os.close(fd)
            raise
        saved = os.fdopen(fd, "rb")
        try:
            self._check_header(saved.readline(_STATE_LINE_MAX))
        except BaseException:
            saved.close()
            raise
        return saved

    def _check_header(self, head: bytes) -> None:
        """Refuse a file that is not this FIFO's state; ValueError if it is ours but unreadable."""
        if not head.startswith(_STATE_HEAD):
            raise FileExistsError(errno.EEXIST, "%s is not a filetimer state file; refusing to use or replace it"
                                  % self.path)
        try:
            header = json.loads(head)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not (type(header) is dict and header.get("version") == _STATE_VERSION and type(header.get("fifo")) is str):
            raise ValueError("not a filetimer state file of version %d" % _STATE_VERSION)
        if header["fifo"] != self.fifo:
            raise FileExistsError(errno.EEXIST, "state file %s belongs to the server of %s, not of %s; refusing to "
                                  "use or replace it" % (self.path, header["fifo"], self.fifo))

    def rewrite(self, lines: Iterable[bytes], since: int, backlog: int, lock: "ContextManager[object]") -> None:
        """Replace the file by ``lines``, the live state when it had ``since`` bytes and ``backlog`` lines were
        backlogged: written unlocked; then, under ``lock``, what was appended or backlogged meanwhile is added,
        the new file renamed into place, and appends go there."""
        temporary = self.path + ".tmp"
        fd = self._create_private(temporary)
        replaced = False
        try:
            header = '%s, "version": %d, "fifo": %s, "written": %r}\n' % (
                _STATE_HEAD.decode(), _STATE_VERSION, _json_str(self.fifo), time.time())
            size = _write_all(fd, header.encode("ascii"))
            lines = iter(lines)  # in pieces: a large table is never one string
            for chunk in iter(lambda: b"".join(itertools.islice(lines, 1024)), b""):
                size += _write_all(fd, chunk)
            with lock:
                if self.abandoned:
                    return
                if self.fd >= 0 and self.size > since:  # appended while the lines were written
                    size += _write_all(fd, os.pread(self.fd, self.size - since, since))
                size += _write_all(fd, b"".join(self.backlog[backlog:]))  # then, what an append failed to write
                os.replace(temporary, self.path)
                self.close()
                self.fd, self.size, self.rewritten, self.broken, self.backlog = fd, size, size, False, []
                replaced = True
        finally:
            if not replaced:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    @property
    def outgrown(self) -> bool:
        """Whether a rewrite is due: the appended part has outgrown the last one, or an append failed."""
        return self.broken or self.size - self.rewritten > max(self.rewritten, _COMPACT_MIN_BYTES)

    def append(self, data: bytes) -> None:
        """Add lines with one write; after a failed one, to the backlog until the next rewrite."""
        if self.fd < 0:
            return
        if self.broken:
            self.backlog.append(data)
            return
        try:
            written = os.write(self.fd, data)
        except OSError as e:
            written, reason = -1, str(e)
        else:
            reason = "disk full"
        if written != len(data):
            self.broken = True  # a torn line may end the file: nothing more is appended after it
            self.backlog.append(data)
            _log.error("state file %s: an append failed (%s); what the server reads is not durable until the "
                       "file can be rewritten", self.path, reason)
            return
        self.size += written

    def adopt(self, saved: BinaryIO) -> None:
        """Append to the file just replayed (it is rewritten once it has outgrown itself), if it ends whole."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        st, replayed = os.fstat(fd), os.fstat(saved.fileno())
        if (st.st_dev, st.st_ino) != (replayed.st_dev, replayed.st_ino) or os.pread(fd, 1, st.st_size - 1) != b"\n":
            os.close(fd)  # replaced meanwhile, or torn by a crash: a rewrite comes first
            return
        self.fd, self.size = fd, st.st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def _create_private(path: str) -> int:
        """A new file only we can read, never one another user planted (a leftover of ours is replaced)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            _check_private_file(path, os.lstat(path))  # a rewrite cut short by a crash: ours to replace
            os.unlink(path)
            fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)
        return fd


def _write_all(fd: int, data: bytes) -> int:
    """Write every byte (a regular file may take fewer at once); return how many."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def _state_lines(saved: BinaryIO) -> Iterator[bytes]:
    """The non-empty lines of a saved state file: an over-long one as b"?" (unreadable), a last one torn by a
    crash not at all."""
    skipping = False  # inside an over-long line
    for line in iter(functools.partial(saved.readline, _STATE_LINE_MAX), b""):
        whole = line.endswith(b"\n")
        if skipping:
            skipping = not whole
        elif not whole and len(line) == _STATE_LINE_MAX:
            yield b"?"
            skipping = True
        elif whole and line != b"\n":
            yield line[:-1]


def _saved_timers(saved: BinaryIO) -> Tuple[List[FileTimerRequest], int]:
    """The timers a state file holds, and how many signals are due, without looking at the processes."""
    timers: Dict[Tuple[int, str], FileTimerRequest] = {}
    due: Set[int] = set()
    for line in _state_lines(saved):
        with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):
            if not line.startswith(b'{"record"'):
                request = FileTimerRequest.from_json(line)
                timers.pop((request.worker_pid, request.scope_id), None)
                if request.expiration_time >= 0:
                    timers[request.worker_pid, request.scope_id] = request
                continue
            record = json.loads(line)
            pid = record["request"]["pid"] if record["record"] == "schedule" else record["pid"]
            if record["record"] in ("schedule", "drop"):
                started = record.get("start_time")  # of the process that exited: not a later one at its pid
                for key in [key for key, t in timers.items()
                            if key[0] == pid and (started is None or t.start_time in (None, started))]:
                    del timers[key]
                (due.add if record["record"] == "schedule" else due.discard)(pid)
    return list(timers.values()), len(due)


def _worker_record(timers: _Timers, pid: int) -> bytes:
    """Where a reaped worker stands: a signal still due (its timers dropped), or done with."""
    due = timers.due.get(pid)
    if due is None:
        return _record("drop", pid=pid)
    request = dataclasses.replace(due.request, start_time=timers.workers[pid].start_time)
    return _record("schedule", at=time.time() + (due.when - time.monotonic()), signal=due.signal, event=due.event,
                   request=json.loads(request.to_json()))


class _Journal(_StateFile):
    """The state file as the server's journal: what the server reads is written here before it is applied,
    its own changes follow as records (``timers.records``, a reaped worker's :func:`_worker_record`). A restart
    replays it into the table; a thread rewrites it from the table, outside the server's ``lock``, whenever it
    has outgrown itself."""

    def __init__(self, path: str, fifo: str, timers: _Timers, lock: "ContextManager[object]") -> None:
        super().__init__(path, fifo)
        self.timers, self.lock = timers, lock
        self.compact_due = threading.Event()  # set when the file should be rewritten
        self.stopping = False

    def open_or_set_aside(self) -> Optional[BinaryIO]:
        """The saved state of this FIFO; a corrupt one is moved aside (ERROR), one not ours refused."""
        try:
            return self.open_saved()
        except ValueError as e:
            _log.error("state file %s is unusable (%s); moving it to %s.bad and starting empty", self.path, e,
                       self.path)
            os.replace(self.path, self.path + ".bad")
            return None

    def resume(self, saved: Optional[BinaryIO]) -> None:
        """Restore the saved state, if any, then append from now on (to a fresh file if that one is torn)."""
        if saved is not None:
            self.restore(saved)
        if self.fd < 0:
            self.compact()

    def write(self, data: bytes) -> None:
        """Append lines before they take effect."""
        if data:
            self.append(data)
            if self.outgrown:
                self.compact_due.set()

    def flush(self) -> None:
        """Write the records the table owes."""
        self.write(b"".join(self.timers.records))
        self.timers.records.clear()

    def restore(self, saved: BinaryIO) -> None:
        """Replay a saved state into the table: timers, workers' identities and signals due. A timer due within
        _RESTORE_GRACE fires no sooner: a release its worker sent while no server ran (kept) arrives first."""
        timers = self.timers
        timers.replaying = True
        try:
            with saved:
                bad = self._replay(saved)
                self.adopt(saved)
        finally:
            timers.replaying = False
            timers.records.clear()
        settle = time.monotonic() + _RESTORE_GRACE
        for _, timer in timers.armed():
            timer.deadline = max(timer.deadline, settle)
        timers.rebuild_heaps()
        _log.info("restored %d timers and %d signals due from %s%s", timers.count, len(timers.due), self.path,
                  " (%d unreadable lines skipped)" % bad if bad else "")

    def _replay(self, saved: BinaryIO) -> int:
        """Apply the saved lines in order; return how many were unreadable."""
        bad = 0
        batch: List[FileTimerRequest] = []  # the requests of one read, and after it the identities they had
        identities: Dict[int, int] = {}  # pid: the start time of the process its lines without one named
        for line in _state_lines(saved):
            try:
                if line.startswith(b'{"record": "identity"'):
                    record = json.loads(line)
                    identities[record["pid"]] = record["start_time"]
                    continue
                self._replay_batch(batch, identities)
                if line.startswith(b'{"record"'):
                    self._replay_record(json.loads(line))
                    continue
                try:
                    batch.append(FileTimerRequest.from_json(line))
                except ValueError:  # as ingest did: a request it ends with counts
                    salvaged = _request_inside(line)
                    if salvaged is None:
                        raise
                    batch.append(salvaged)
            except (ValueError, KeyError, TypeError, RecursionError):
                bad += 1
            if self.timers.count > self.timers.max_total:
                raise ValueError("state file %s holds more than %d timers" % (self.path, self.timers.max_total))
        self._replay_batch(batch, identities)
        return bad

    def _replay_batch(self, batch: List[FileTimerRequest], identities: Dict[int, int]) -> None:
        """Apply saved requests, bound to the process each named when it was read (torch's name none)."""
        for request in batch:
            if request.start_time is None:
                request.start_time = identities.get(request.worker_pid)
        self.timers.apply(batch, time.time(), time.monotonic())
        batch.clear()

    def _replay_record(self, record: Dict[str, Any]) -> None:
        """Apply one of the server's own saved records as it was applied when it was written."""
        kind = record["record"]
        if kind == "schedule":  # every timer of the worker dropped, a signal due at "at"
            request = FileTimerRequest._from_fields(record["request"])
            at, sig, event = record["at"], record["signal"], record["event"]
            if not (type(at) is float and type(sig) is int and 0 < sig < _NSIG and type(event) is str):
                raise ValueError("a malformed schedule record")
            worker = self.timers.watch(request)
            if worker is not None:
                self.timers.disarm(worker)
                self.timers.due[worker.pid] = _Due(time.monotonic() + at - time.time(), sig, request, event)
            return
        worker = self.timers.workers.get(record["pid"])
        if worker is not None and kind == "drop" and record.get("start_time") in (None, worker.start_time):
            self.timers.disarm(worker)  # reaped for the last time, cleared, or exited (not a later process)
            self.timers.due.pop(worker.pid, None)

    def stop(self, abandon: bool) -> None:
        """End compact_loop; ``abandon`` a rewrite under way (it waits for the lock of the pass that stops)."""
        self.stopping = True
        self.abandoned = abandon
        self.compact_due.set()

    def compact_loop(self) -> None:
        """Rewrite the file whenever its appended part has outgrown it; retry a failure every second."""
        while True:
            self.compact_due.wait()
            if self.stopping:
                return
            self.compact_due.clear()
            if not self.outgrown:
                continue
            try:
                self.compact()
            except Exception:  # a full disk must stop neither the watchdog nor stop()
                _log.exception("could not rewrite the state file %s", self.path)
                time.sleep(1)
                self.compact_due.set()

    def compact(self) -> None:
        """Rewrite the file from the live timers and signals due (taken under the lock, written outside it)."""
        with self.lock:
            self.flush()
            workers = [(w.pid, w.start_time, list(w.timers.values())) for w in self.timers.workers.values()]
            due = [_worker_record(self.timers, pid) for pid in self.timers.due]
            since, backlog = self.size, len(self.backlog)
        lines = itertools.chain((_wire_line(pid, t.scope, t.expiration_time, t.signal, start_time, t.dump_signal)
                                 for pid, start_time, timers in workers for t in timers), due)
        self.rewrite(lines, since, backlog, self.lock)


# --- the reaper: what happens when a timer fires ----------------------------------------------------------------

def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for ``sig`` now (SigCgt in /proc/<pid>/status); False if unknown. A
    worker that exec'd after arming, or whose application reset the signal, would be killed by it (alone, not
    with its tree). Without /proc (macOS) the client's word is taken."""
    if not _HAVE_PROC:
        return True
    try:
        status = _read_proc("/proc/%d/status" % pid)
        mask = int(status[status.index(b"\nSigCgt:") + 8 :].split(None, 1)[0], 16)
    except (OSError, ValueError, IndexError):
        return False
    return bool(mask >> (sig - 1) & 1)


def _children(pid: int) -> List[int]:
    """The pids of the children of ``pid``, from /proc (none without it: macOS); OSError if part of it could
    not be read (the fd limit, ...), as the list is not whole then."""
    found: List[int] = []
    if not _HAVE_PROC:
        return found
    try:
        entries = os.listdir("/proc/%d/task" % pid if _HAVE_PROC_CHILDREN else "/proc")
    except OSError as e:
        if e.errno in _GONE:
            return found
        raise
    for entry in entries:
        try:
            if _HAVE_PROC_CHILDREN:
                found += map(int, _read_proc("/proc/%d/task/%s/children" % (pid, entry)).split())
            elif entry.isdigit() and _proc_stat(int(entry))[0] == pid:  # an older kernel: every process's parent
                found.append(int(entry))
        except OSError as e:
            if e.errno not in _GONE:
                raise
    return found


def _ancestors() -> Set[int]:
    """This process and its ancestors: never part of a worker's tree, whatever /proc says."""
    pids: Set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = _proc_stat(pid)[0]
        except OSError:
            pid = os.getppid() if pid == os.getpid() else 0
    return pids


def _wait_until_stopped(pids: Iterable[int], timeout: float = 0.1) -> None:
    """Wait, at most ``timeout``, until every thread of each process has stopped, or the process has exited:
    a fork under way at the SIGSTOP completes, and once its thread is stopped the child is listed."""
    started = time.monotonic()
    stopped: Set[str] = set()
    pending = list(pids)
    while pending:
        pending = [pid for pid in pending if not _stopped(pid, stopped)]
        waited = time.monotonic() - started
        if not pending or waited >= timeout:
            return
        if waited < 0.002:  # a stop takes tens of microseconds: let the process run rather than sleep
            os.sched_yield()
        else:
            time.sleep(0.0002)


def _stopped(pid: int, stopped: Set[str]) -> bool:
    """Whether every thread of the process is stopped, traced or dead (or the process is gone); threads found
    so are added to ``stopped``, and those already in it are not read again."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True
    for tid in tids:
        path = "/proc/%d/task/%s/stat" % (pid, tid)
        if path in stopped:
            continue
        try:
            line = _read_proc(path)
        except OSError:  # that thread has exited
            continue
        if line[line.rindex(b")") + 2 :][:1] not in (b"T", b"t", b"Z", b"X"):
            return False
        stopped.add(path)
    return True


class _TreeWalk:
    """A worker's process tree, stopped so that none of it can fork away, then killed: each process is stopped
    (SIGSTOP) before its children are listed, and the walk is repeated until a pass over the stopped tree finds
    nothing new. Each is bound to its identity (pidfd, else start time) and to its parent; the server and its
    ancestors are never touched."""

    def __init__(self, worker: _Worker) -> None:
        self.tree = [worker]  # the worker, then its descendants, breadth first
        self.seen = {worker.pid}
        self.unread: Set[int] = set()  # processes whose children, or identity, could not be read
        self.frugal = False  # once at the fd limit: children are bound by their start time alone
        self.spared: Optional[Set[int]] = None  # the server and its ancestors, read once a child turns up

    def stop_descendants(self) -> None:
        """Stop the (stopped) worker's descendants, until a pass over the tree finds no new process."""
        grown = True
        while grown:
            grown = False
            _wait_until_stopped([process.pid for process in self.tree])
            for parent in self.tree:  # grows as it is walked
                try:
                    children = self._at_fd_limit(_children, parent.pid)
                except OSError:
                    self.unread.add(parent.pid)
                    continue
                self.unread.discard(parent.pid)
                for pid in children:
                    grown = self._add(pid, parent.pid) or grown

    def _add(self, pid: int, parent: int) -> bool:
        """Stop a listed child and add it to the tree; whether it was a new one."""
        if self.spared is None:
            self.spared = _ancestors()
        if pid in self.seen or pid in self.spared:
            return False
        try:
            child = self._at_fd_limit(self._stop_child, pid, parent)
        except OSError:
            self.unread.add(pid)
            return False
        self.unread.discard(pid)
        if child is None:
            return False
        self.seen.add(pid)
        self.tree.append(child)
        return True

    def _at_fd_limit(self, read: Callable[..., _T], *args: Any) -> _T:
        """read(); at the fd limit, again once a stopped process gave up its pidfd, and no more pidfds are
        taken: a stopped process cannot exit by itself, so its start time checked again binds it."""
        try:
            return read(*args)
        except OSError as e:
            held = [p for p in self.tree[1:] if p.pidfd is not None and p.start_time is not None]
            if e.errno not in (errno.EMFILE, errno.ENFILE) or not held:
                raise
            self.frugal = True
            held[-1].close()
            return read(*args)

    def _stop_child(self, pid: int, parent: int) -> Optional[_Worker]:
        """Stop a listed child, bound to its identity and still its parent's; None if it is gone, OSError if
        it cannot be read now."""
        child = _Worker.attach(pid, None, not self.frugal)
        if child is None:
            return None
        try:
            if _proc_stat(pid)[0] != parent:  # the pid was reused meanwhile
                raise ProcessLookupError(errno.ESRCH, "process %d has exited" % pid)
            child.send_signal(_SIGSTOP)
        except OSError as e:
            child.close()
            if e.errno in _GONE:
                return None
            raise
        return child

    def kill(self) -> int:
        """SIGKILL the whole stopped tree; return the number of descendants."""
        worker = self.tree[0]
        for process in self.tree:
            try:
                process.send_signal(_SIGKILL)
            except OSError as e:
                if e.errno not in _GONE:
                    self.unread.add(process.pid)
        for process in self.tree[1:]:
            process.close()
        if self.unread:
            _log.error("kill worker process: pid %d: %d processes of its tree could not be read (file descriptors "
                       "or /proc): their children may live on", worker.pid, len(self.unread))
        if len(self.tree) > 1:
            _log.info("kill worker process: pid %d: %d descendants killed with it", worker.pid, len(self.tree) - 1)
        return len(self.tree) - 1


# The events reported to a server's log_event, with the request concerned (None for the first two).
_STARTED, _STOPPED = "watchdog started", "watchdog stopped"
_EXPIRED = "timer expired"
_DUMPING, _KILLING, _ESCALATING = "dump worker stacks", "kill worker process", "escalate worker process"
_Event = Tuple[str, Optional[FileTimerRequest], str]  # an event, its request, and a warning to log (or "")

_DUMP_GRACE = 0.1  # seconds from the stack-dump signal to the kill (see README "When a worker hangs")
_QUIET_EXPIRIES_PER_PASS = 1000  # report-only expiries handled per pass, after every signal due is sent
_FD_RESERVE = 8  # descriptors held back for a kill at the fd limit: its /proc reads and the tree's pidfds


class _Reaper:
    """What happens when a timer fires: the kill policy and its safety rules.

    A worker is signalled once, with its earliest expired timer's signal; asked to dump its stacks first if it
    can (``dump_grace`` before); SIGKILL takes its tree; another signal escalates ``kill_after`` later. Every
    signal goes through ``reap_worker`` (the server's) to a verified process, never pid 0, 1 or the server; a
    signal due later is journaled first. Events wait in ``events`` until the pass's signals are sent.
    """

    def __init__(self, timers: _Timers, reap_worker: Callable[[int, int], bool], journal: Callable[[bytes], None],
                 dump_grace: float, kill_after: Optional[float], kill_tree: bool, exit_on_reap: bool) -> None:
        self.timers, self.reap_worker, self.journal = timers, reap_worker, journal
        self.dump_grace, self.kill_after = dump_grace, kill_after
        self.kill_tree, self.exit_on_reap = kill_tree, exit_on_reap
        self.events: List[_Event] = []
        self._reserve: List[int] = []

    def reap_expired(self, now: float) -> int:
        """Reap every worker with an expired timer, then report a bounded number of report-only expiries;
        return the last signal sent (0: none)."""
        sent = 0
        for worker, expired in self.timers.pop_expired(now).items():
            try:  # whatever one reap raises (a subclass's reap_worker), the others go on
                self.events += [(_EXPIRED, timer.request(worker), "") for timer in expired]
                if worker.pid in self.timers.due:  # dumped (or signalled) already: its kill is not postponed
                    self.journal(_worker_record(self.timers, worker.pid))
                else:
                    sent = self._reap(worker, expired[0].request(worker), now) or sent
            except Exception:
                _log.exception("reaping pid %d failed", worker.pid)
        releases = []
        for worker, timer in self.timers.pop_quiet(now, _QUIET_EXPIRIES_PER_PASS):
            self.events.append((_EXPIRED, timer.request(worker), ""))
            releases.append(_wire_line(worker.pid, timer.scope, -1, 0))
        self.journal(b"".join(releases))
        return sent

    def _reap(self, worker: _Worker, decider: FileTimerRequest, now: float) -> int:
        """Ask the worker to dump its stacks and schedule its signal, or signal it now."""
        self.free_reserve()
        dump = decider.dump_signal
        if dump and self.dump_grace > 0 and _catches(worker.pid, dump) and self.signal(worker, dump):
            self.timers.due[worker.pid] = _Due(now + self.dump_grace, decider.signal, decider, _KILLING)
            self.journal(_worker_record(self.timers, worker.pid))  # before a crash can forget the kill
            self.events.append((_DUMPING, decider, "%s: pid %d (scope %r) timed out; %s in %.3g s" % (
                _DUMPING, worker.pid, decider.scope_id, _signal_name(decider.signal), self.dump_grace)))
            return 0
        return self._kill(worker, decider.signal, decider, _KILLING, now)

    def send_due(self, now: float) -> int:
        """Send the signals due by now; return the last one sent (0: none)."""
        sent = 0
        for pid, due in list(self.timers.due.items()):
            if due.when <= now:
                del self.timers.due[pid]
                sent = self._kill(self.timers.workers[pid], due.signal, due.request, due.event, now) or sent
        return sent

    def _kill(self, worker: _Worker, sig: int, request: FileTimerRequest, event: str, now: float) -> int:
        """Reap a worker with ``sig``, schedule its escalation, record and report it; return sig if sent."""
        self.free_reserve()
        sent = self.reap_worker(worker.pid, sig)
        if sent and self.kill_after is not None and sig != _SIGKILL and worker.pid in self.timers.workers:
            self.timers.due[worker.pid] = _Due(now + self.kill_after, _SIGKILL,
                                               dataclasses.replace(request, signal=_SIGKILL), _ESCALATING)
        self.journal(_worker_record(self.timers, worker.pid))  # signalled for the last time, or when to escalate
        if not sent:
            return 0
        self.events.append((event, request, "%s: pid %d (scope %r) with %s" % (
            event, worker.pid, request.scope_id, _signal_name(sig))))
        return sig

    def signal_worker(self, pid: int, sig: int) -> bool:
        """What the server's _reap_worker does: SIGKILL takes the worker's tree; another signal only the
        process that armed the timer; exit_on_reap's signal goes to the server's own process."""
        if pid == os.getpid() and self.exit_on_reap:
            os.kill(pid, sig)
            return True
        worker = self.timers.workers.get(pid)
        if worker is None:
            return False
        if sig == _SIGKILL and self.kill_tree:
            return self.kill_process_tree(worker) is not None
        return self.signal(worker, sig)

    def kill_process_tree(self, worker: _Worker) -> Optional[int]:
        """SIGKILL the worker and its descendants (see _TreeWalk); the number of descendants, or None if the
        worker could not be signalled."""
        if not self.signal(worker, _SIGSTOP):
            return None
        walk = _TreeWalk(worker)
        walk.stop_descendants()
        return walk.kill()

    def signal(self, worker: _Worker, sig: int) -> bool:
        """Signal the worker if that is safe and it is still the same process."""
        pid = worker.pid
        if pid <= 1 or (pid == os.getpid() and not self.exit_on_reap):
            _log.error("refusing to signal pid %d", pid)
            return False
        try:
            worker.send_signal(sig)
        except ProcessLookupError:
            _log.info("pid %d exited before it could be signalled", pid)
            return False
        except OSError as e:
            _log.error("could not send %s to pid %d: %s", _signal_name(sig), pid, e)
            return False
        return True

    def hold_reserve(self) -> None:
        """Hold descriptors back for the next kill, as many as the fd limit lets us."""
        while len(self._reserve) < _FD_RESERVE:
            try:
                self._reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:  # at the limit: as many as there are
                return

    def free_reserve(self) -> None:
        """Give the held-back descriptors to a kill; the pass takes them back when it ends."""
        for fd in self._reserve:
            os.close(fd)
        self._reserve.clear()


# --- server ---------------------------------------------------------------------------------------------------

def _create_fifo(path: str, mode: int) -> Tuple[int, Tuple[int, int]]:
    """Make the FIFO with exactly ``mode``; return a non-blocking read fd and its (dev, ino). A stale FIFO of
    ours that nobody else could have opened is served again (what clients wrote to a crashed server is still
    in it while a client holds it open); another stale FIFO is replaced, anything else left alone."""
    reuse = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISFIFO(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                    "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a FIFO")
            raise FileExistsError(errno.EEXIST, "%s exists and is %s; refusing to replace it" % (path, kind))
        _check_owner(path, st, "the FIFO")
        if _fifo_has_reader(path):
            raise FileExistsError(errno.EEXIST, "%s is already being served by a running server" % path)
        reuse = st.st_uid == os.geteuid() and st.st_nlink == 1 and not st.st_mode & 0o777 & ~mode
        if not reuse:
            os.unlink(path)  # stale, and open to others once (or under another name): a new one
    if not reuse:
        os.mkfifo(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    opened = os.fstat(fd)
    if not stat.S_ISFIFO(opened.st_mode) or (reuse and (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino)):
        os.close(fd)
        raise FileExistsError(errno.EEXIST, "%s was replaced while being created" % path)
    os.fchmod(fd, mode)  # mkfifo applied the umask
    return fd, (opened.st_dev, opened.st_ino)


def _mark_as_filetimers(fd: int, path: str) -> None:
    """An exclusive flock on the server's end of its FIFO: clients keep the FIFO open for it (not for torch's),
    and a second server of the same FIFO is refused."""
    try:
        import fcntl
    except ImportError:  # no flock: clients write and close, which works too
        return
    for _ in range(100):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:  # a client looking (it lets go at once), or another server
            time.sleep(0.01)
        except OSError:
            return
    raise FileExistsError(errno.EEXIST, "%s is already being served by a running server" % path)


def _raise_fd_limit() -> None:
    """Let the process open as many descriptors as its hard limit allows: a pidfd per watched worker."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # no resource module (Windows), or not allowed: as it is
        pass


def _check_server_options(max_interval: float, dump_grace: float, kill_after: Optional[float], mode: int,
                          caps: Dict[str, int]) -> None:
    """ValueError naming the first option that is out of range."""
    _check_seconds("max_interval", max_interval, positive=True)
    _check_seconds("dump_grace", dump_grace)
    if kill_after is not None:
        _check_seconds("kill_after", kill_after)
    if not (isinstance(mode, int) and 0 <= mode <= 0o777):
        raise ValueError("mode must be permission bits such as 0o600, got %r" % (mode,))
    if mode & 0o002:
        raise ValueError("mode %03o lets every user write the FIFO, and so have your processes signalled; "
                         "use 0o600 (or 0o620 for your group)" % mode)
    for name, cap in caps.items():
        if not (type(cap) is int and cap > 0):
            raise ValueError("%s must be a positive integer, got %r" % (name, cap))
    if mode & 0o044:
        raise ValueError("mode %03o lets others read the FIFO, and so take requests meant for the server and "
                         "learn pids and scopes; use 0o600 (or 0o620 for your group)" % mode)


LogEvent = Callable[[str, Optional[FileTimerRequest]], None]
_READ_SIZE = 8192  # a read's lines are applied together: a flood of tiny lines is still cut into small bites
_READ_SECONDS = 0.002  # of reading per pass; then deadlines are looked at, whatever is left in the pipe
_SELECT_RESOLUTION = 0.001  # seconds: epoll and poll take whole milliseconds


class FileTimerServer:
    """Watches the FIFO and signals workers whose timers expire.

    One watchdog thread blocks in one select on the FIFO, a wake-up pipe and the workers' pidfds until a
    request, the nearest deadline (monotonic), a signal due, a worker exit, ``stop()`` or the ``max_interval``
    heartbeat. The bookkeeping is a _Timers, the kill policy a _Reaper, the state file a _Journal. Callers use
    ``start``/``stop`` (or ``with``), ``run_once``, torch's methods, ``timers()`` and the counts; a subclass
    may override ``_reap_worker``, through which every reap goes, as in torch.

    Besides torch's options (``exit_on_reap`` among them): the FIFO's ``mode``; ``kill_after`` s to SIGKILL a
    signalled worker still alive; ``state_file`` to journal and restore the timers; ``kill_tree``;
    ``dump_grace`` s from the stack dump to the signal (0: no dump); and the caps on timers.
    """

    def __init__(self, file_path: Optional[str], run_id: str = "", max_interval: float = 10, daemon: bool = True,
                 log_event: Optional[LogEvent] = None, *, mode: int = 0o600, kill_after: Optional[float] = None,
                 exit_on_reap: bool = False, state_file: Optional[str] = None, kill_tree: bool = True,
                 dump_grace: float = _DUMP_GRACE, max_timers_per_pid: int = 10_000, max_timers: int = _MAX_TIMERS,
                 ) -> None:
        _require_posix()
        _check_server_options(max_interval, dump_grace, kill_after, mode,
                              {"max_timers_per_pid": max_timers_per_pid, "max_timers": max_timers})
        self._file_path = _resolve_path(file_path)
        _check_directory(self._file_path)  # first: it makes the private default directory
        self._max_interval = float(max_interval)
        self._daemon = daemon
        self._log_event_cb = log_event
        self.request_count = 0  # valid requests processed
        self.rejected_count = 0  # lines refused
        self._reject_log = _LogLimit("rejected lines")
        self._lock = threading.RLock()  # guards the tables and the pipe against the public methods
        self._selector = selectors.DefaultSelector()
        self._timers = _Timers(self._selector, max_timers_per_pid, max_timers)
        self._reaper = _Reaper(self._timers, self._reap_worker, self._write_journal, float(dump_grace), kill_after,
                               kill_tree, exit_on_reap)
        self._partial = b""  # an unfinished line from the last read
        self._skipping = False  # inside an over-long line, until its newline
        self._last_progress_time = int(time.time())
        self._next_beat = time.monotonic() + self._max_interval
        self._thread: Optional[threading.Thread] = None
        self._compactor: Optional[threading.Thread] = None
        self._stopping = self._closed = False
        self._journal = self._open(state_file, mode)

    def _open(self, state_file: Optional[str], mode: int) -> Optional[_Journal]:
        """Open the state file (before the FIFO: one not ours to use stops us here), the FIFO, then restore."""
        saved: Optional[BinaryIO] = None
        journal = None
        try:
            if state_file is not None:
                journal = _Journal(state_file, self._file_path, self._timers, self._lock)
                saved = journal.open_or_set_aside()
            self._open_fifo(mode)
        except BaseException:
            self._selector.close()
            if saved is not None:
                saved.close()
            raise
        try:
            if journal is not None:
                journal.resume(saved)
        except BaseException:
            self._journal = journal
            self._close()
            raise
        return journal

    def _open_fifo(self, mode: int) -> None:
        """Make the FIFO and the wake-up pipe, and hold a writer and a reserve of descriptors."""
        _raise_fd_limit()
        self._read_fd, self._fifo_id = _create_fifo(self._file_path, mode)
        try:
            _mark_as_filetimers(self._read_fd, self._file_path)
            # Our own writer: the FIFO never reaches end-of-file, so no client has to connect first.
            self._hold_fd = os.open(self._file_path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except BaseException:
            os.close(self._read_fd)
            raise
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        for fd in (self._read_fd, self._wake_r):
            self._selector.register(fd, selectors.EVENT_READ)
        self._reaper.hold_reserve()

    # -- life cycle

    def start(self) -> None:
        """Start the watchdog thread."""
        if self._closed:
            raise RuntimeError("this FileTimerServer was stopped; create a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watchdog_loop, name="filetimer-watchdog", daemon=self._daemon)
        self._thread.start()
        if self._journal is not None:
            self._compactor = threading.Thread(target=self._journal.compact_loop, name="filetimer-state", daemon=True)
            self._compactor.start()
        self._log_event(_STARTED, None)

    def stop(self) -> None:
        """Stop the watchdog, apply what is still in the pipe, close everything and remove the FIFO if ours."""
        self._stop_thread()
        with self._lock:
            if self._closed:
                return
            self._read_requests(drain=True)  # a request written before stop() is not lost with the pipe
            self._close()
        self._log_event(_STOPPED, None)

    def run_once(self) -> None:
        """Apply everything in the pipe and reap every expired timer, once; then stop (as torch does)."""
        self._stop_thread()
        with self._lock:
            if not self._closed:
                self._read_requests(drain=True)
                self._run_pass([])
        self.stop()

    def __enter__(self) -> "FileTimerServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stop_thread(self) -> None:
        thread = self._thread
        self._stopping = True
        if self._journal is not None:
            self._journal.stop(abandon=thread is threading.current_thread())
        if thread is threading.current_thread():  # stop() from log_event: the pass holds the lock a rewrite waits for
            return
        if self._compactor is not None:
            self._compactor.join()
            self._compactor = None
        if thread is None:
            return
        if not self._closed:  # else the watchdog is ending the pass whose log_event stopped it
            self._wake()
        thread.join()
        self._thread = None

    def _wake(self) -> None:
        """Make the watchdog's select return, so it re-reads its state."""
        with contextlib.suppress(BlockingIOError):  # already full of wake-ups
            os.write(self._wake_w, b"!")

    def _close(self) -> None:
        self._closed = True
        for worker in list(self._timers.workers.values()):
            self._timers.forget(worker)
        self._selector.close()
        for fd in (self._read_fd, self._hold_fd, self._wake_r, self._wake_w):
            os.close(fd)
        self._reaper.free_reserve()
        if self._journal is not None:
            self._journal.close()
        with contextlib.suppress(OSError):
            st = os.lstat(self._file_path)
            if stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == self._fifo_id:
                os.unlink(self._file_path)

    # -- torch's public methods and hooks

    @staticmethod
    def is_process_running(pid: int) -> bool:
        """Whether a process with this pid exists (0 and negative pids are never "running")."""
        return _pid_exists(pid)

    def get_last_progress_time(self) -> int:
        """Wall-clock second of the watchdog's last pass."""
        return self._last_progress_time

    def register_timers(self, timer_requests: Iterable[FileTimerRequest]) -> None:
        """Apply acquires and releases, in order, as if they had arrived on the FIFO."""
        with self._lock:
            requests = list(timer_requests)
            self._write_journal(b"".join(request._line() for request in requests))
            self.request_count += self._timers.apply(requests, time.time(), time.monotonic())
            self._flush_records()
            if not self._closed:
                self._wake()  # a new deadline may be the nearest

    def clear_timers(self, worker_pids: Iterable[int]) -> None:
        """Drop every timer of these pids, and of workers that have exited."""
        with self._lock:
            self._timers.clear(set(worker_pids))
            self._flush_records()
            self._timers.forget_exited(self._timers.workers.values())

    def get_expired_timers(self, deadline: float) -> Dict[int, List[FileTimerRequest]]:
        """Active timers due at or before the wall-clock ``deadline``, by pid."""
        with self._lock:
            due = time.monotonic() + (deadline - time.time())
            expired: Dict[int, List[FileTimerRequest]] = {}
            for worker, timer in sorted((armed for armed in self._timers.armed() if armed[1].deadline <= due),
                                        key=lambda armed: armed[1].deadline):
                expired.setdefault(worker.pid, []).append(timer.request(worker))
            return expired

    def timers(self) -> List[FileTimerRequest]:
        """A snapshot of the active timers."""
        with self._lock:
            return [timer.request(worker) for worker, timer in self._timers.armed()]

    @property
    def file_path(self) -> str:
        return self._file_path

    @property
    def _request_count(self) -> int:
        """torch's name for request_count."""
        return self.request_count

    def _reap_worker(self, worker_pid: int, signal: int) -> bool:
        """Signal a worker being reaped (see _Reaper.signal_worker). Every reap goes through here, as in
        torch's server, exit_on_reap's too: a subclass may override it, and True counts as reaped."""
        return self._reaper.signal_worker(worker_pid, signal)

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
        """Block until a request, a worker exit or stop(), or the next deadline or heartbeat. select() sleeps
        whole milliseconds, rounded up: the last fraction before a deadline is slept precisely instead."""
        with self._lock:
            deadline = self._timers.next_deadline()
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
        """Read requests, reap what expired, send what is due; then report the pass's events."""
        for key, _ in ready:
            if key.fd == self._read_fd:
                self._read_requests()
            elif key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            elif isinstance(key.data, _Worker):
                self._timers.forget(key.data)  # its pidfd is readable: it exited
        now = time.monotonic()
        sent = self._reaper.reap_expired(now)
        if self._timers.due:
            sent = self._reaper.send_due(now) or sent
        events, self._reaper.events = self._reaper.events, []
        for name, request, warning in events:  # after every signal of the pass
            if warning:
                _log.warning("%s", warning)
            self._log_event(name, request)
        if sent and self._reaper.exit_on_reap:
            _log.warning("exit_on_reap: signalling the server's own process %d with %s", os.getpid(),
                         _signal_name(sent))
            self._reap_worker(os.getpid(), sent)
        if now >= self._next_beat:
            self._next_beat = now + self._max_interval
            self._timers.forget_idle()  # and exited workers that no pidfd reports
            self._timers.forget_exited(worker for worker in self._timers.workers.values() if worker.pidfd is None)
        self._flush_records()
        if not self._closed:  # else stop() was called from log_event
            self._reaper.hold_reserve()
        self._last_progress_time = int(time.time())

    def _read_requests(self, drain: bool = False) -> bool:
        """Apply what the pipe holds, for at most _READ_SECONDS unless ``drain``; True if there may be more."""
        started = time.monotonic()
        while True:
            try:
                chunk = os.read(self._read_fd, _READ_SIZE)
            except BlockingIOError:
                return False
            self._ingest(chunk)
            if len(chunk) < _READ_SIZE:
                return False
            if not drain and time.monotonic() - started >= _READ_SECONDS:
                return True

    def _ingest(self, chunk: bytes) -> None:
        """Split a read into lines; apply the valid requests, count and log the rest."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if self._skipping:
            if not lines:  # still inside the over-long line
                self._partial = b""
                return
            start = lines[0].rfind(_REQUEST_START)  # its end, already rejected, but for a request it ends with
            lines[0] = lines[0][start:] if start >= 0 else b""
            self._skipping = False
        if len(self._partial) >= PIPE_BUF:
            self._reject(self._partial, "line longer than PIPE_BUF (%d)" % PIPE_BUF)
            self._partial = b""
            self._skipping = True
        if not lines:
            return
        if self._journal is not None:  # no join of the lines without one
            self._journal.write(b"\n".join(lines) + b"\n")  # durable before it is applied
        requests = []
        for line in lines:
            if line:
                try:
                    requests.append(FileTimerRequest.from_json(line))
                except ValueError as e:
                    self._reject(line, str(e))
                    request = _request_inside(line)
                    if request is not None:
                        requests.append(request)
        self.request_count += self._timers.apply(requests, time.time(), time.monotonic())
        self._flush_records()

    def _reject(self, line: bytes, reason: str) -> None:
        """Count a refused line and log it, at most a few per minute."""
        self.rejected_count += 1
        if self._reject_log.allow():
            _log.warning("rejected request %r: %s", line[:100], reason)

    def _write_journal(self, data: bytes) -> None:
        if self._journal is not None:
            self._journal.write(data)

    def _flush_records(self) -> None:
        if self._journal is not None:
            self._journal.flush()
        else:
            self._timers.records.clear()

    def _log_event(self, name: str, request: Optional[FileTimerRequest]) -> None:
        if self._log_event_cb is not None:
            try:
                self._log_event_cb(name, request)
            except Exception:
                _log.exception("log_event callback failed for %r", name)


# --- command line ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2 (``run``: 125)."""

    usage_status = 2

    def error(self, message: str) -> NoReturn:
        self.exit(self.usage_status, "%s: error: %s (see --help)\n" % (self.prog, message))


def _argument(convert: Callable[[str], _T], valid: Callable[[_T], bool], expected: str) -> Callable[[str], _T]:
    """An argparse type: the converted text, or a one-line error unless it is ``valid``."""

    def parse(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError("expected %s, got %r" % (expected, text))
        return value

    return parse


_seconds = _argument(float, lambda value: 0 <= value < math.inf, "a number of seconds >= 0")
_positive_seconds = _argument(float, lambda value: 0 < value < math.inf, "a number of seconds > 0")
_positive_int = _argument(lambda text: int(text) if text.isdigit() else 0, lambda value: value > 0,
                          "a whole number > 0")
_octal_mode = _argument(functools.partial(int, base=8), lambda value: 0 <= value <= 0o777,
                        "octal permission bits such as 600")
_worker_pid = _argument(int, lambda value: 2 <= value <= _PID_MAX, "a process id of 2 or more")


def _signal_number(text: str) -> int:
    """TERM, SIGTERM, term and 15 all name SIGTERM; 0 means "report only"."""
    name = text.upper()
    name = name if name.isdigit() or name.startswith("SIG") else "SIG" + name  # RTMIN is SIGRTMIN, refused below
    number = int(name) if name.isdigit() else getattr(signal, name, -1)
    if not (isinstance(number, int) and 0 <= number < _NSIG) or name.startswith(("SIG_", "SIGRT")):
        raise argparse.ArgumentTypeError("unknown signal %r" % text)
    return number


_FIFO_HELP = ("the FIFO (default: $FILETIMER_PATH, $TORCHELASTIC_TIMER_FILE, "
              "else $XDG_RUNTIME_DIR/filetimer.fifo or <tmp>/filetimer-<uid>/filetimer.fifo)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="filetimer", description="Out-of-process watchdog for hung worker processes.")
    parser.add_argument("--version", action="version", version="filetimer " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (_add_serve, _add_timer_commands, _add_run, _add_status):
        add_command(commands)
    return parser


def _add_serve(commands: "argparse._SubParsersAction[_Parser]") -> None:
    serve = commands.add_parser("serve", help="run a timer server on a FIFO", description="Run a timer server "
                                "until SIGINT, SIGTERM or SIGHUP; the FIFO is removed on exit.")
    serve.set_defaults(run=_serve)
    serve.add_argument("path", nargs="?", metavar="PATH", help=_FIFO_HELP)
    serve.add_argument("--max-interval", type=_positive_seconds, default=10.0, metavar="S",
                       help="heartbeat interval in seconds (default 10); expiry does not depend on it")
    serve.add_argument("--run-id", default="", help="a name for this run, shown in events")
    serve.add_argument("--mode", type=_octal_mode, default=0o600, help="FIFO permissions in octal (default 600; "
                       "620 lets your group arm timers; others may never write)")
    serve.add_argument("--kill-after", type=_seconds, metavar="S",
                       help="SIGKILL a signalled worker still alive after S seconds")
    serve.add_argument("--exit-on-reap", action="store_true",
                       help="signal this server's own process after reaping a worker (torch's behaviour)")
    serve.add_argument("--dump-grace", type=_seconds, default=_DUMP_GRACE, metavar="S", help="seconds between "
                       "asking a worker to dump its stacks and killing it (default %g; 0: no dump)" % _DUMP_GRACE)
    serve.add_argument("--max-timers-per-pid", type=_positive_int, default=10_000, metavar="N",
                       help="timers one process may hold; more are refused (default 10000)")
    serve.add_argument("--max-timers", type=_positive_int, default=_MAX_TIMERS, metavar="N",
                       help="timers the server holds in all; more are refused (default %d)" % _MAX_TIMERS)
    serve.add_argument("--no-kill-tree", dest="kill_tree", action="store_false",
                       help="on SIGKILL, kill the worker alone, not its descendants")
    state = serve.add_mutually_exclusive_group()
    state.add_argument("--state-file", metavar="FILE", help="keep the active timers in FILE, to re-arm them on "
                       "restart (default: PATH.state, beside the FIFO)")
    state.add_argument("--no-state", action="store_true", help="keep no state file")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper, help="log level on stderr (default INFO)")
    serve.add_argument("--events", choices=["log", "json"], default="log",
                       help="events as log lines on stderr (default) or as JSON lines on stdout")

def _add_timer_commands(commands: "argparse._SubParsersAction[_Parser]") -> None:
    exit_codes = ("Exit status: 0 done, 2 bad arguments or an unusable FIFO (missing, not a FIFO, no permission), "
                  "3 no server is reading the FIFO.")
    acquire = commands.add_parser("acquire", help="arm a timer for a process (the calling shell by default)",
                                  description="Arm the timer SCOPE: if it is not released within SECONDS, the "
                                  "server signals the process.", epilog=exit_codes)
    acquire.set_defaults(run=_send_for)
    release = commands.add_parser("release", help="disarm a timer", description="Disarm the timer SCOPE.",
                                  epilog=exit_codes)
    release.set_defaults(run=_send_for, after=None, signal=0)
    for command in (acquire, release):
        command.add_argument("--scope", required=True, help="the timer's name, unique within the process")
        if command is acquire:
            command.add_argument("--after", type=_seconds, required=True, metavar="SECONDS",
                                 help="seconds from now until the timer fires")
            command.add_argument("--signal", type=_signal_number, default=_SIGKILL, metavar="SIGNAL",
                                 help="signal name or number: KILL (default), TERM, SIGTERM, 15, ...")
        command.add_argument("--pid", type=_worker_pid, help="the process the timer is for (default: the parent "
                             "process, that is the shell that runs this command)")
        command.add_argument("--path", help=_FIFO_HELP)
        command.add_argument("--connect-timeout", type=_seconds, default=1.0, metavar="S",
                             help="seconds to wait for a server that is restarting (default 1)")

def _add_run(commands: "argparse._SubParsersAction[_Parser]") -> None:
    run = commands.add_parser("run", help="run a command that the server kills, with its tree, if it outlives SECONDS",
                              description="Arm a timer for this process, then exec COMMAND in it: the command "
                              "itself (same pid, same start time) is signalled at the deadline and, with SIGKILL, its "
                              "whole tree, as coreutils timeout does but enforced from outside.", epilog="Exit "
                              "status: the command's; 125 if filetimer fails (no server, bad arguments) and the "
                              "command is not run; 126 if COMMAND cannot be run, 127 if it is not found.")
    run.usage_status = 125
    run.set_defaults(run=_run)
    run.add_argument("--after", type=_positive_seconds, required=True, metavar="SECONDS",
                     help="seconds from now until the command is signalled")
    run.add_argument("--signal", type=_signal_number, default=_SIGKILL, metavar="SIGNAL",
                     help="signal name or number: KILL (default), TERM, ...")
    run.add_argument("--scope", default="run", help="the timer's name (default: run)")
    run.add_argument("--path", help=_FIFO_HELP)
    run.add_argument("--connect-timeout", type=_seconds, default=1.0, metavar="S",
                     help="seconds to wait for a server that is restarting (default 1)")
    run.add_argument("--unguarded-ok", action="store_true",
                     help="with no server, run the command anyway, unguarded (said on stderr)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")

def _add_status(commands: "argparse._SubParsersAction[_Parser]") -> None:
    status = commands.add_parser("status", help="whether a server serves a FIFO, and its active timers",
                                 description="Tell whether a server is serving PATH and list its active timers "
                                 "from the state file beside it.", epilog="Exit status: 0 a server is serving PATH, "
                                 "1 none is, 2 an unusable state file.")
    status.set_defaults(run=_status)
    status.add_argument("path", nargs="?", metavar="PATH", help=_FIFO_HELP)
    status.add_argument("--state-file", metavar="FILE", help="the state file (default: beside the FIFO, PATH.state)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

_WARNED_EVENTS = (_DUMPING, _KILLING, _ESCALATING)  # the server logs these


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s filetimer %(levelname)s %(message)s")

    def event(name: str, request: Optional[FileTimerRequest]) -> None:
        if args.events == "json":
            record = {"time": time.time(), "run_id": args.run_id, "event": name, "pid": None, "scope": None,
                      "signal": None}
            if request is not None:
                record.update(pid=request.worker_pid, scope=request.scope_id, signal=request.signal)
            print(json.dumps(record), flush=True)
        elif request is None:
            _log.info("%s", name)
        elif name not in _WARNED_EVENTS:
            _log.info("%s: pid %d, scope %r, %s", name, request.worker_pid, request.scope_id,
                      _signal_name(request.signal))

    path = _resolve_path(args.path)
    state_file = None if args.no_state else (args.state_file or path + ".state")
    server = FileTimerServer(path, run_id=args.run_id, max_interval=args.max_interval, log_event=event,
                             mode=args.mode, kill_after=args.kill_after, exit_on_reap=args.exit_on_reap,
                             state_file=state_file, kill_tree=args.kill_tree, dump_grace=args.dump_grace,
                             max_timers_per_pid=args.max_timers_per_pid, max_timers=args.max_timers)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    kept = ", state in " + state_file if state_file else ""
    print("filetimer %s serving %s (pid %d%s)" % (__version__, server.file_path, os.getpid(), kept),
          file=sys.stderr if args.events == "json" else sys.stdout, flush=True)
    stop.wait()
    server.stop()
    return 0


def _send_for(args: argparse.Namespace) -> int:
    """acquire or release: one request on behalf of --pid (or the parent process), bound to its identity."""
    expiration_time = -1 if args.after is None else time.time() + args.after
    if args.after is not None and args.pid is None and sys.stdin is not None and sys.stdin.isatty():
        print("filetimer: warning: arming %r for the interactive shell (pid %d): it gets %s if you do not "
              "release in time; use --pid to guard another process" % (args.scope, os.getppid(),
                                                                       _signal_name(args.signal)), file=sys.stderr)
    pid = args.pid or os.getppid()
    start_time = _process_start_time(pid)
    if start_time is None and not FileTimerServer.is_process_running(pid):
        raise ProcessLookupError(errno.ESRCH, "no process %d" % pid)
    client = FileTimerClient(args.path, dump_stacks=False, connect_timeout=args.connect_timeout)
    client._send_line(FileTimerRequest(pid, args.scope, expiration_time, args.signal, start_time)._line())
    return 0


def _run(args: argparse.Namespace) -> int:
    """Arm a timer for this very process, then become the command: the same pid, the same identity."""
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        print("filetimer run: error: no command to run (see --help)", file=sys.stderr)
        return 125
    try:
        request = FileTimerRequest(os.getpid(), args.scope, time.time() + args.after, args.signal,
                                   _process_start_time(os.getpid()))  # no dump offered: the command has no handler
        FileTimerClient(args.path, dump_stacks=False, keep_open=False,
                        connect_timeout=args.connect_timeout)._send_line(request._line())
    except (OSError, ValueError) as e:
        if not (args.unguarded_ok and isinstance(e, BrokenPipeError)):
            print("filetimer run: error: %s; %s not run" % (e, command[0]), file=sys.stderr)
            return 125
        print("filetimer run: warning: %s; running %s unguarded" % (e, command[0]), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print("filetimer run: error: cannot run %s: %s" % (command[0], e.strerror), file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126


def _status(args: argparse.Namespace) -> int:
    path = _resolve_path(args.path)
    state_file = args.state_file or path + ".state"
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            print("filetimer: error: %s is not a FIFO" % path, file=sys.stderr)
            return 2
    try:
        serving = _fifo_has_reader(path)
    except OSError:
        serving = False
    try:
        saved = _StateFile(state_file, path).open_saved()
        if saved is None:
            raise FileNotFoundError(errno.ENOENT, state_file)
        with saved:
            written: Optional[float] = os.fstat(saved.fileno()).st_mtime  # the last append
            timers, due = _saved_timers(saved)
    except FileNotFoundError:
        written, timers, due = None, [], 0
    except (OSError, ValueError) as e:
        print("filetimer: error: cannot read the state file %s: %s" % (state_file, e), file=sys.stderr)
        return 2
    timers.sort(key=lambda t: t.expiration_time)
    if args.json:
        now = time.time()
        rows = [{"pid": t.worker_pid, "scope": t.scope_id, "expiration_time": t.expiration_time, "seconds_left":
                 t.expiration_time - now, "signal": t.signal, "signal_name": _signal_name(t.signal)} for t in timers]
        print(json.dumps({"fifo": path, "serving": serving, "state_file": state_file, "written": written,
                          "timers": rows if serving else []}))
    else:
        _print_status(path, state_file, serving, written, timers, due)
    return 0 if serving else 1


def _print_status(path: str, state_file: str, serving: bool, written: Optional[float],
                  timers: List[FileTimerRequest], due: int) -> None:
    """The status as a table: the saved timers of a running server (a stopped one's are history)."""
    now = time.time()
    if written is None:
        print("%s serving %s; %s state file at %s%s" % ("a server is" if serving else "no server is", path,
              "it keeps no" if serving else "no", state_file, ", so its timers are unknown" if serving else ""))
        return
    plural = "" if len(timers) == 1 else "s"
    if not serving:
        print("no server is serving %s; last known state written %.1f s ago (%d timer%s then)"
              % (path, now - written, len(timers), plural))
        return
    print("a server is serving %s: %d active timer%s%s (state written %.1f s ago)" % (path, len(timers), plural,
          ", %d worker%s about to be signalled" % (due, "" if due == 1 else "s") if due else "", now - written))
    if timers:
        scopes = [t.scope_id.encode("utf-8", "backslashreplace").decode("utf-8") for t in timers]  # lone surrogates
        width = max(5, *map(len, scopes))
        print("%8s  %-*s  %10s  %s" % ("PID", width, "SCOPE", "LEFT (s)", "SIGNAL"))
        for t, scope in zip(timers, scopes):
            left = t.expiration_time - now  # readable however far it is (--after 1e300 is allowed)
            print("%8d  %-*s  %10s  %s" % (t.worker_pid, width, scope, "%.1f" % left if abs(left) < 1e9
                                          else "%.3g" % left, _signal_name(t.signal)))


def main(argv: Optional[List[str]] = None) -> int:
    """The ``python -m filetimer`` command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError as e:  # no server reads the FIFO: a shell script may choose to carry on unguarded
        print("filetimer: error: %s" % e, file=sys.stderr)
        return 3 if os.path.lexists(_resolve_path(getattr(args, "path", None))) else 2
    except (OSError, ValueError) as e:
        print("filetimer: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
