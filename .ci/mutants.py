"""A short mutation check: does the suite notice when a safety rule is broken?

Each mutant is one textual replacement in a copy of filetimer.py, and the
tests that must catch it. For every mutant this script copies filetimer.py and
test_filetimer.py into a fresh temporary directory, applies the replacement,
runs the listed tests there and records whether they failed (the mutant is
caught) or passed (it SURVIVED).

Exit status 1 if any mutant survives, if an old snippet is not found exactly
once in filetimer.py (the code changed: update the table), if a mutated file
does not compile, or if the listed tests do not pass on the unmodified copy.

Usage: python .ci/mutants.py [--jobs N] [NAME ...]   (names: run only those)
Standard library only; run from anywhere.
"""

import argparse
import ast
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Set, Tuple

Mutant = Tuple[str, str, str, List[str]]

# (name, old snippet in filetimer.py, replacement, tests that must catch it)
MUTANTS: List[Mutant] = [
    (
        "signal-pid-guard",  # _Reaper.signal would signal pid <= 1 and its own process
        'if pid <= 1 or (pid == os.getpid() and not self.exit_on_reap):',
        'if False:',
        ["ForbiddenPidTest.test_signal_refuses_forbidden_pids_itself",
         "ForbiddenPidTest.test_forbidden_pids_never_reach_kill"],
    ),
    (
        "watch-pid-guard",  # _Timers.watch would accept a timer for pid <= 1
        "if pid <= 1:",
        "if False:",
        ["ForbiddenPidTest.test_watch_refuses_forbidden_pids_itself",
         "ForbiddenPidTest.test_forbidden_pids_never_reach_kill"],
    ),
    (
        "attach-identity",  # _Worker.attach would accept a request naming another process's start time
        "and claimed_start_time != start_time",
        "and False",
        ["PidReuseTest.test_reused_pid_is_never_signalled_with_pidfd",
         "PidReuseTest.test_reused_pid_is_never_signalled_with_start_time",
         "PidReuseTest.test_a_request_naming_an_earlier_process_of_the_pid_is_refused"],  # no root needed
    ),
    (
        "fifo-non-fifo-removed",  # _create_fifo would remove a file, directory or symlink instead of refusing
        'raise FileExistsError(errno.EEXIST, "%s exists and is %s; refusing to replace it" % (path, kind))',
        "(os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(path)",
        ["FifoPathTest.test_regular_file_directory_and_symlinks_are_left_alone",
         "CommandLineTest.test_bad_invocations_exit_2_with_one_line"],
    ),
    (
        "fifo-stale-reused",  # _create_fifo would serve a stale FIFO that others could have opened
        "reuse = st.st_uid == os.geteuid() and st.st_nlink == 1 and not st.st_mode & 0o777 & ~mode",
        "reuse = True",
        ["FifoPathTest.test_stale_fifo_is_replaced"],
    ),
    (
        "fifo-live-replaced",  # _create_fifo would replace the FIFO of a live server
        "if _fifo_has_reader(path):",
        "if False:",
        ["FifoPathTest.test_fifo_of_a_live_server_is_refused_and_that_server_keeps_working",
         "FifoPathTest.test_a_fifo_another_kind_of_server_reads_is_refused",
         "CommandLineTest.test_bad_invocations_exit_2_with_one_line"],
    ),
    (
        "state-tmp-followed",  # a rewrite would open a planted file or symlink where it writes its temporary file
        "flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | getattr(os, \"O_NOFOLLOW\", 0)",
        "flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC",
        ["StateFileTest.test_a_rewrite_is_a_private_new_file_renamed_over_the_old_one"],
    ),
    (
        "journal-skipped",  # lines read from the FIFO would live only in memory until a rewrite
        'self._journal.write(b"\\n".join(lines) + b"\\n")  # durable before it is applied',
        'pass',
        ["StateFileTest.test_a_crash_right_after_a_read_neither_kills_the_healthy_nor_frees_the_hung",
         "StateFileTest.test_the_file_is_private_and_follows_the_timers_at_once"],
    ),
    (
        "overdue-dropped",  # a restart would drop the timers whose deadline passed while no server ran
        '        self.timers.apply(batch, time.time(), time.monotonic())\n        batch.clear()',
        "        self.timers.apply([r for r in batch if not 0 <= r.expiration_time < time.time()], time.time(),\n"
        "                          time.monotonic())\n        batch.clear()",
        ["StateFileTest.test_timers_that_expired_while_no_server_ran_fire_on_restart"],
    ),
    (
        "schedule-forgotten",  # a dump grace or escalation in progress would not survive a restart
        'if due is None:\n        return _record("drop", pid=pid)',
        'if True:\n        return _record("drop", pid=pid)',
        ["StateFileTest.test_a_restart_during_the_dump_grace_still_kills",
         "StateFileTest.test_a_restart_before_the_escalation_still_escalates"],
    ),
    (
        "identity-unrecorded",  # a restart would bind a torch worker's timer to whatever process has its pid now
        'self.records.append(_record("identity", pid=pid, start_time=worker.start_time))',
        'pass',
        ["StateFileTest.test_a_restart_never_binds_a_torch_workers_timer_to_a_new_owner_of_its_pid"],
    ),
    (
        "state-owner-unchecked",  # a state file planted by another user would be replayed
        "if st.st_uid != os.geteuid():\n        raise PermissionError(errno.EPERM, \"state file",
        "if False:\n        raise PermissionError(errno.EPERM, \"state file",
        ["StateFileTest.test_a_state_file_another_user_could_have_written_is_refused_unread"],
    ),
    (
        "state-mode-unchecked",  # a state file others may write would be replayed
        "if st.st_mode & 0o022:\n        raise PermissionError(errno.EPERM, \"state file",
        "if False:\n        raise PermissionError(errno.EPERM, \"state file",
        ["StateFileTest.test_a_state_file_another_user_could_have_written_is_refused_unread"],
    ),
    (
        "state-symlink-followed",  # a symbolic link at the state path would be followed
        "fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, \"O_NOFOLLOW\", 0))",
        "fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)",
        ["StateFileTest.test_a_state_file_another_user_could_have_written_is_refused_unread"],
    ),
    (
        "never-rewritten",  # the state file would grow without bound
        "return self.broken or self.size - self.rewritten > max(self.rewritten, _COMPACT_MIN_BYTES)",
        "return self.broken",
        ["StateFileTest.test_the_file_grows_with_what_was_read_and_is_rewritten_seldom"],
    ),
    (
        "release-not-kept",  # a release that finds no server would be lost, and the restored timer kill the worker
        "            if later is None:\n                raise\n        with self._lock:",
        "            if later is None:\n                raise\n            return\n        with self._lock:",
        ["StateFileTest.test_a_release_sent_while_the_server_is_down_reaches_the_next_one"],
    ),
    (
        "kept-after-new",  # a kept release would be delivered after a newer acquire of its scope, cancelling it
        "            fd, self._fd = self._fd, None\n            while self._kept:",
        "            fd, self._fd = self._fd, None\n            if line is not None:\n"
        "                fd = self._write_line(fd, line, retry, self._keep_open)\n                line = None\n"
        "            while self._kept:",
        ["StateFileTest.test_a_kept_release_never_cancels_a_later_acquire"],
    ),
    (
        "pipe-not-kept",  # a keep_open client would drop the pipe holding what a crashed server had not read
        "fd, self._stale_fd = self._stale_fd, fd",
        "pass",
        ["StateFileTest.test_lines_a_crashed_server_had_not_read_reach_the_next_one"],
    ),
    (
        "stop-not-drained",  # stop() would close a pipe that still holds requests, and lose them
        "self._read_requests(drain=True)  # a request written before stop() is not lost with the pipe",
        "pass",
        ["StateFileTest.test_stop_applies_and_records_what_is_still_in_the_pipe"],
    ),
    (
        "fork-keeps-kept",  # a forked child would deliver its parent's kept releases, maybe after a newer acquire
        "client._kept.clear()  # the parent's releases: the parent delivers them",
        "pass",
        ["StateFileTest.test_a_forked_child_leaves_the_parents_kept_releases_to_the_parent"],
    ),
    (
        "exit-by-exit-scope",  # an expires exit would compute its scope again (another task's), and not release
        "        timer = entered.pop()\n",
        "        timer = entered.pop()\n        if timer.scope != self._thread_scope():\n"
        "            raise KeyError(timer.scope)\n",
        ["ExpiresShapesTest.test_an_exit_in_another_task_or_thread_releases_the_scope_that_was_entered"],
    ),
    (
        "dump-without-handler",  # a worker that exec'd or reset the dump signal would die of it, without its tree
        'if dump and self.dump_grace > 0 and _catches(worker.pid, dump) and self.signal(worker, dump):',
        'if dump and self.dump_grace > 0 and self.signal(worker, dump):',
        ["StackDumpTest.test_a_worker_that_cannot_dump_any_more_is_killed_at_once_with_its_tree"],
    ),
    (
        "no-resync",  # a fragment left by a writer that died mid-line would swallow the next worker's request
        "    start = line.rfind(_REQUEST_START)\n    if start > 0:",
        "    start = line.rfind(_REQUEST_START)\n    if False:",
        ["BadInputTest.test_a_fragment_left_by_a_writer_costs_only_itself"],
    ),
    (
        "read-unbounded",  # a flood of tiny lines from two writers would keep the watchdog reading, not killing
        "            if not drain and time.monotonic() - started >= _READ_SECONDS:\n                return True\n",
        "",
        ["HostileLoadTest.test_a_flood_of_tiny_lines_from_two_writers_does_not_delay_a_kill"],
    ),
    (
        "quiet-ahead-of-kills",  # report-only expiries would be handled before a kill that is due with them
        'self.timers.pop_quiet(now, _QUIET_EXPIRIES_PER_PASS)',
        'self.timers.pop_quiet(now, 10**9)',
        ["HostileLoadTest.test_report_only_expiries_do_not_delay_a_kill"],
    ),
    (
        "caps-unchecked",  # one writer could arm timers without bound
        'if old is None and (len(timers) >= self.max_per_pid or self.count >= self.max_total):',
        'if False:',
        ["HostileLoadTest.test_timers_beyond_the_caps_are_refused_and_said_so"],
    ),
    (
        "ignored-unlimited",  # every request naming a process that is gone would be logged
        'if not self.replaying and self._ignore_log.allow():',
        'if not self.replaying:',
        ["HostileLoadTest.test_requests_for_a_process_that_is_gone_are_logged_a_bounded_number_of_times"],
    ),
    (
        "fd-limit-walk",  # at the fd limit the tree walk would stop reading children, leaving them alive
        '            if e.errno not in (errno.EMFILE, errno.ENFILE) or not held:',
        '            if True:',
        ["FdLimitTest.test_a_worker_and_its_150_children_die_under_a_limit_of_64_descriptors"],
    ),
    (
        "fd-limit-kept",  # the server would keep the soft descriptor limit it was started with
        "        _raise_fd_limit()\n",
        "",
        ["FdLimitTest.test_the_server_raises_its_soft_limit_to_the_hard_one"],
    ),
    (
        "unverified-signalled",  # a process whose start time cannot be read now would be signalled by pid alone
        "        except OSError as e:\n            raise OSError(e.errno, \"cannot verify that pid",
        "        except OSError:\n            alive = True\n        if False:\n"
        "            raise OSError(e.errno, \"cannot verify that pid",
        ["FdLimitTest.test_a_process_that_cannot_be_identified_is_neither_watched_nor_signalled"],
    ),
    (
        "unverified-watched",  # a timer for a process that cannot be identified now would be armed by pid alone
        "            if pidfd is None or claimed_start_time is not None:  # nothing to bind to, or a claim to check",
        "            if False:",
        ["FdLimitTest.test_a_process_that_cannot_be_identified_is_neither_watched_nor_signalled"],
    ),
    (
        "unread-tree-silent",  # a tree walk that missed processes would say nothing
        '        if self.unread:\n            _log.error(',
        '        if False:\n            _log.error(',
        ["FdLimitTest.test_a_tree_that_cannot_be_read_whole_says_how_much_it_missed"],
    ),
    (
        "dump-to-fd-2",  # the dump would go to whatever file holds fd 2 by the time the worker hangs
        "faulthandler.register(_DUMP_SIGNAL, file=_dump_fd, all_threads=True, chain=False)",
        "faulthandler.register(_DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=False)",
        ["StackDumpTest.test_the_dump_goes_to_the_stderr_the_worker_had_when_its_client_was_made"],
    ),
    (
        "client-lock-not-reentrant",  # a keep_open client used from a signal handler would deadlock
        "        self._lock = threading.RLock()  # guards the above; reentrant for a signal handler that sends",
        "        self._lock = threading.Lock()",
        ["ClientTest.test_a_keep_open_client_can_send_from_a_signal_handler"],
    ),
    (
        "unread-fifo-owner-unchecked",  # another user's FIFO with no reader would read as "no server" (exit 3)
        "            if e.errno == errno.ENXIO:  # another user's FIFO is refused, read or not",
        "            if False:",
        ["SharedMachineTest.test_another_users_fifo_is_exit_2_even_with_no_reader"],
    ),
    (
        "status-raw-scope",  # status would crash (exit 2) on a scope it cannot encode
        'scopes = [t.scope_id.encode("utf-8", "backslashreplace").decode("utf-8") for t in timers]',
        "scopes = [t.scope_id for t in timers]",
        ["CommandLineTest.test_status_prints_any_scope_and_any_deadline"],
    ),
    (
        "no-flock-mark",  # clients could not tell a filetimer server: the default client would write and close
        "        _mark_as_filetimers(self._read_fd, self._file_path)\n",
        "",
        ["ClientTest.test_the_fifo_is_held_open_for_a_filetimer_server_only"],
    ),
    (
        "held-for-torch",  # the default client would hold torch's FIFO open, and torch's server never reap
        "    fcntl.flock(fd, fcntl.LOCK_UN)\n    return False",
        "    fcntl.flock(fd, fcntl.LOCK_UN)\n    return True",
        ["ClientTest.test_the_fifo_is_held_open_for_a_filetimer_server_only"],
    ),
    (
        "reap-bypasses-hook",  # a subclass's _reap_worker (torch's extension point) would not be called
        '        sent = self.reap_worker(worker.pid, sig)',
        '        sent = self.signal_worker(worker.pid, sig)',
        ["TorchApiTest.test_every_reap_goes_through_reap_worker_which_a_subclass_may_override"],
    ),
    (
        "run-unarmed",  # filetimer run would exec the command without arming its timer
        "connect_timeout=args.connect_timeout)._send_line(request._line())",
        "connect_timeout=args.connect_timeout)",
        ["CommandLineTest.test_run_in_a_recipe_line_kills_the_hung_command_and_its_tree"],
    ),
    (
        "replay-unbound",  # a replayed torch line would bind to whatever process holds its pid after the restart
        "                request.start_time = identities.get(request.worker_pid)",
        "                pass",
        ["StateFileTest.test_a_restart_never_binds_a_torch_workers_timer_to_a_new_owner_of_its_pid"],
    ),
    (
        "stale-acquire-disarms",  # an acquire naming an earlier process at the pid would disarm the live timer
        '            worker = workers.get(request.worker_pid)\n            if worker is None or',
        "            stale = workers.get(request.worker_pid)\n"
        "            if stale is not None and request.scope_id in stale.timers:\n"
        "                stale.timers.pop(request.scope_id).worker = None\n"
        "                self.count -= 1\n"
        "            worker = workers.get(request.worker_pid)\n            if worker is None or",
        ["PidReuseTest.test_an_acquire_naming_an_earlier_process_leaves_the_live_timers_armed"],
    ),
    (
        "reap-unisolated",  # one failing reap would lose the other expiries of its pass
        '            except Exception:\n                _log.exception("reaping pid %d failed", worker.pid)',
        '            except ZeroDivisionError:\n                raise',
        ["WatchdogKeepsGoingTest.test_a_reap_that_raises_does_not_cost_the_other_reaps_of_the_pass"],
    ),
    (
        "no-restore-grace",  # a restored timer would fire before the release its worker sent during the restart
        '            timer.deadline = max(timer.deadline, settle)',
        '            pass',
        ["StateFileTest.test_a_release_kept_during_a_restart_beats_the_restored_timer"],
    ),
    (
        "release-keeps-timer",  # FileTimerServer._apply: a release would leave the timer armed
        'old = timers.pop(scope, None)',
        'old = timers.pop(scope, None) if request.expiration_time >= 0 else None',
        ["StateFileTest.test_the_file_is_private_and_follows_the_timers_at_once",  # released, sleeper alive
         "HealthyWorkerIsSparedTest.test_worker_that_finishes_in_time_is_not_killed"],
    ),
    (
        "client-owner-check",  # FileTimerClient would write into a FIFO of another user
        '_check_owner(self._file_path, st, "the FIFO")',
        "pass",
        ["SharedMachineTest.test_the_client_refuses_a_fifo_of_another_user_before_writing",
         "SharedMachineTest.test_the_client_refuses_a_fifo_of_another_user_without_root"],
    ),
    (
        "tree-spares-nothing",  # a SIGKILL tree walk would take the server's own process and its ancestors
        'if pid in self.seen or pid in self.spared:',
        'if pid in self.seen:',
        ["ProcessTreeTest.test_the_server_and_its_ancestors_are_never_part_of_a_tree"],
    ),
    (
        "tree-one-pass",  # a process forked while the tree was being stopped would escape the kill
        '        while grown:',
        '        for _ in range(1):',
        ["ProcessTreeTest.test_a_child_whose_fork_completes_after_its_parent_was_listed_is_killed",
         "ProcessTreeTest.test_a_tree_that_keeps_forking_during_the_kill_leaves_nothing"],
    ),
    (
        "tree-no-stop-wait",  # children would be listed before every thread had stopped, a fork still under way
        'if line[line.rindex(b")") + 2 :][:1] not in (b"T", b"t", b"Z", b"X"):',
        "if False:",
        ["ProcessTreeTest.test_the_walk_waits_until_every_thread_has_stopped"],
    ),
    (
        "dump-promise-unchecked",  # an acquire would promise a dump after the application took the dump signal
        "return bool(self._dump_signal) and _getsignal(self._dump_signal) == signal.SIG_DFL",
        "return bool(self._dump_signal)",
        ["StackDumpTest.test_an_application_handler_of_the_dump_signal_is_left_alone"],
    ),
    (
        "dump-signal-unchecked",  # _from_fields would accept "dump_signal": "x"; the reap pass would then raise
        "if not (dump is None or (type(dump) is int and 0 <= dump < _NSIG)):",
        "if False:",
        ["BadInputTest.test_a_bad_dump_signal_is_rejected_and_a_worker_expiring_in_the_same_pass_is_still_killed"],
    ),
    (
        "from-json-pipe-buf",  # from_json would accept a line of PIPE_BUF bytes plus its newline (not atomic)
        "if len(data) >= PIPE_BUF:",
        "if len(data) > PIPE_BUF:",
        ["WireFormatTest.test_a_line_is_at_most_pipe_buf_bytes_with_its_newline"],
    ),
    (
        "cli-signal-names",  # acquire --signal would take SIG_DFL, SIG_BLOCK or SIGRTMIN as a signal
        ''' or name.startswith(("SIG_", "SIGRT")):''',
        ":",
        ["CommandLineTest.test_signal_option_takes_signals_only"],
    ),
    (
        "enter-swallows-broken-pipe",  # expires would run its block unguarded when no server reads
        "        client.acquire(scope, timer.deadline)\n",
        "        with contextlib.suppress(BrokenPipeError):\n            client.acquire(scope, timer.deadline)\n",
        ["ClientTest.test_expires_with_no_server_raises_broken_pipe_and_runs_nothing_unguarded"],
    ),
    (
        "dump-handler-unchecked",  # a client would replace an application's own handler of the dump signal
        "if not _DUMP_SIGNAL or signal.getsignal(_DUMP_SIGNAL) is not signal.SIG_DFL or sys.stderr is None:",
        "if not _DUMP_SIGNAL or sys.stderr is None:",
        ["StackDumpTest.test_a_client_made_after_an_application_handler_leaves_it_in_place"],
    ),
    (
        "mkfifo-no-mode",  # the FIFO would exist with the umask's mode (0666 under umask 0) until fchmod
        "os.mkfifo(path, mode)",
        "os.mkfifo(path)",
        ["FifoPathTest.test_the_fifo_is_made_with_its_mode_not_fixed_later"],
    ),
    (
        "cli-no-start-time",  # acquire/release from a shell would not bind the timer to the process's identity
        "FileTimerRequest(pid, args.scope, expiration_time, args.signal, start_time)",
        "FileTimerRequest(pid, args.scope, expiration_time, args.signal)",
        ["PidReuseTest.test_acquire_binds_the_timer_to_the_process_start_time"],
    ),
    (
        "client-pid-once",  # a forked child would send its requests under its parent's pid
        'if self._pid != os.getpid():  # first request, or a forked child',
        'if not self._pid:',
        ["ExpiresShapesTest.test_a_forked_child_is_killed_for_its_own_hang_not_its_parent",
         "ExpiresShapesTest.test_a_child_forked_inside_a_block_on_another_thread_leaves_it_cleanly"],
    ),
    (
        "compaction-no-heapify",  # the compacted heap would keep insertion order: a short timer behind a long one
        '        heapq.heapify(self.heap)\n        heapq.heapify(self.quiet)\n',
        '        pass\n',
        ["HungWorkerIsKilledTest.test_a_short_timer_behind_a_long_one_fires_after_the_heap_is_compacted"],
    ),
    (
        "escalation-at-once",  # kill_after would give a signalled worker no clean-up window at all
        'self.timers.due[worker.pid] = _Due(now + self.kill_after, _SIGKILL,',
        'self.timers.due[worker.pid] = _Due(now, _SIGKILL,',
        ["EscalationTest.test_worker_ignoring_sigterm_is_killed_after_the_grace_period"],
    ),
    (
        "wait-ignores-deadlines",  # the watchdog would sleep until the heartbeat, not until the nearest deadline
        '                deadline = min(deadline, heap[0][0])',
        '                pass',
        ["HungWorkerIsKilledTest.test_a_hung_worker_is_killed_within_a_second_of_its_deadline"],
    ),
    (
        "wait-ignores-scheduled",  # the kill after a stack dump (or an escalation) would wait for the heartbeat
        'return min(deadline, *(due.when for due in self.due.values())) if self.due else deadline',
        'return deadline',
        ["HungWorkerIsKilledTest.test_a_hung_worker_is_killed_within_a_second_of_its_deadline"],
    ),
    (
        "task-scope-per-loop",  # every task on an event loop would share one default scope
        "id(asyncio.current_task())",
        "id(asyncio._get_running_loop())",
        ["ExpiresShapesTest.test_two_tasks_on_one_line_get_two_timers"],
    ),
    (
        "status-fifo-exists",  # status would call a crashed server's left-behind FIFO "serving"
        "serving = _fifo_has_reader(path)",
        "serving = os.path.exists(path)",
        ["CommandLineTest.test_status_after_a_server_crash_is_not_serving_and_shows_no_timers"],
    ),
    (
        "tree-spares-server-only",  # the walk would stop and kill the server's parent (the worker's child)
        "spared = _ancestors()",
        "spared = {os.getpid()}",
        ["ProcessTreeTest.test_the_server_and_its_ancestors_are_never_part_of_a_tree"],
    ),
    (
        "tree-no-parent-check",  # the walk would take a pid reused by a process that is not the listed child
        "if _proc_stat(pid)[0] != parent:  # the pid was reused meanwhile",
        "if False:",
        ["ProcessTreeTest.test_a_pid_reused_during_the_walk_is_left_alone"],
    ),
    (
        "forget-keeps-scheduled",  # an exited worker's pending escalation would SIGKILL the next owner of its pid
        '        self.disarm(worker)\n        self.due.pop(worker.pid, None)\n        if self.workers',
        '        self.disarm(worker)\n        if self.workers',
        ["PidReuseTest.test_an_escalation_goes_with_its_exited_worker_and_never_hits_a_reused_pid"],
    ),
    (
        "send-signal-identity",  # without a pidfd, a worker whose pid has a new owner would be signalled
        "        if not alive:\n            raise ProcessLookupError",
        "        if False:\n            raise ProcessLookupError",
        ["PidReuseTest.test_a_worker_whose_pid_was_reused_is_never_signalled_with_start_time"],
    ),
    (
        "server-fifo-owner-check",  # the server would replace a stale FIFO of another user
        '_check_owner(path, st, "the FIFO")',
        "pass",
        ["SharedMachineTest.test_the_server_refuses_a_fifo_or_directory_of_another_user",
         "SharedMachineTest.test_the_server_refuses_a_fifo_or_directory_of_another_user_without_root"],
    ),
    (
        "server-directory-owner-check",  # the server would make its FIFO in a directory another user controls
        '_check_owner(directory, st, "the directory")',
        "pass",
        ["SharedMachineTest.test_the_server_refuses_a_fifo_or_directory_of_another_user",
         "SharedMachineTest.test_the_server_refuses_a_fifo_or_directory_of_another_user_without_root"],
    ),
    (
        "open-errors-are-no-server",  # a FIFO the client may not write would read as "no server" (exit 3)
        "if e.errno not in (errno.ENXIO, errno.ENOENT):\n                raise",
        "if False:\n                raise",
        ["SharedMachineTest.test_an_unwritable_fifo_is_exit_2_not_no_server",
         "SharedMachineTest.test_an_unwritable_fifo_is_exit_2_not_no_server_without_root"],
    ),
    (
        "proc-scan-fallback-blind",  # without /proc/<pid>/task/<tid>/children the walk would find no children
        "            elif entry.isdigit() and _proc_stat(int(entry))[0] == pid:",
        "            elif False:",
        ["ProcessTreeTest.test_without_children_files_the_walk_scans_proc_and_still_takes_the_whole_tree"],
    ),
    (
        "watchdog-dies",  # one pass that raised would end the watchdog thread: no hung worker killed after it
        "            except Exception:  # never let the watchdog die",
        "            except ZeroDivisionError:",
        ["WatchdogKeepsGoingTest.test_a_pass_that_raises_is_logged_and_the_watchdog_carries_on"],
    ),
    (
        "watch-no-reuse",  # a worker bound by its pidfd alone would refuse its later requests that name a start time
        "            if request.start_time is None or worker.start_time in (None, request.start_time):\n"
        "                return worker",
        "            if request.start_time is None or worker.start_time in (None, request.start_time):\n"
        "                return None",
        ["PidReuseTest.test_a_worker_bound_by_its_pidfd_alone_takes_later_timers_that_name_its_start_time"],
    ),
    (
        "watch-keeps-exited",  # an exited worker's timers would stay armed, to fire at the new owner of its pid
        "            self.forget(worker)  # the pid now belongs to the process the request names",
        "            pass",
        ["PidReuseTest.test_a_request_naming_the_new_owner_of_a_watched_pid_replaces_the_exited_worker"],
    ),
    (
        "watch-refuses-new-owner",  # the new owner of a watched pid could arm no timer while the old record stays
        "            self.forget(worker)  # the pid now belongs to the process the request names",
        "            return None",
        ["PidReuseTest.test_a_request_naming_the_new_owner_of_a_watched_pid_replaces_the_exited_worker"],
    ),
    (
        "exit-unjournaled",  # a worker that exits with timers armed would stay in the state file (status, restart)
        'self.records.append(_record("drop", pid=worker.pid, start_time=worker.start_time))',
        "pass",
        ["StateFileTest.test_a_worker_that_exits_with_timers_armed_leaves_the_saved_state"],
    ),
    (
        "drop-any-process",  # replaying an exit would drop the timers of a later process at the pid
        'and record.get("start_time") in (None, worker.start_time)',
        "and True",
        ["StateFileTest.test_a_drop_record_never_drops_a_later_process_at_its_pid"],
    ),
    (
        "stop-from-pass-joins-compactor",  # stop() from log_event would wait for a rewrite waiting for its pass
        "if thread is threading.current_thread():  # stop() from log_event",
        "if False:  # stop() from log_event",
        ["LifecycleTest.test_stop_from_log_event_returns_and_leaks_nothing_even_during_a_rewrite"],
    ),
    (
        "reserve-after-stop",  # a pass whose log_event stopped the server would take its reserve of fds back
        "if not self._closed:  # else stop() was called from log_event",
        "if True:",
        ["LifecycleTest.test_stop_from_log_event_returns_and_leaks_nothing_even_during_a_rewrite"],
    ),
    (
        "handler-overtakes-kept",  # a signal handler's line would go before an older kept line of its scope
        "if line is not None and scope in self._kept:",
        "if False:",
        ["StateFileTest.test_a_signal_handler_acquire_is_never_overtaken_by_an_older_kept_release"],
    ),
    (
        "replay-line-too-short",  # a request salvaged from a long bad line would be lost on a restart
        "_STATE_LINE_MAX = PIPE_BUF + 8192",
        "_STATE_LINE_MAX = 2 * PIPE_BUF",
        ["StateFileTest.test_a_request_salvaged_from_a_long_bad_line_survives_a_restart"],
    ),
    (
        "every-stop-abandons",  # any stop() would drop a rewrite under way, and with it what a failed append kept
        "self._journal.stop(abandon=thread is threading.current_thread())",
        "self._journal.stop(abandon=True)",
        ["LifecycleTest.test_stop_waits_for_a_rewrite_under_way"],
    ),
    (
        "status-drops-later-process",  # status would hide the timers of a later process at an exited one's pid
        "(started is None or t.start_time in (None, started))",
        "True",
        ["StateFileTest.test_status_keeps_a_later_process_at_a_pid_whose_exit_was_journaled_after_it"],
    ),
    (
        "log-limit-miscounts",  # after a flood, the log would claim more records left out than there were
        "self.seen - _LOGS_PER_MINUTE, self.what",
        "self.seen, self.what",
        ["BadInputTest.test_a_log_limit_says_how_many_records_it_left_out_once_its_minute_is_over"],
    ),
    (
        "expires-unchecked",  # expires would arm a timer for a negative, infinite, NaN or True number of seconds
        '        _check_seconds("after", after, positive=True)\n        self._entered',
        "        self._entered",
        ["ExpiresShapesTest.test_after_must_be_positive_and_finite"],
    ),
]

TIMEOUT = 60  # seconds per mutant
BASELINE_TIMEOUT = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAILED_TEST = re.compile(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)", re.MULTILINE)


def run_tests(directory: str, tests: Sequence[str], timeout: float) -> Tuple[Optional[int], str]:
    """Run test_filetimer's tests in directory; return (exit status or None on timeout, output)."""
    env = dict(os.environ, PYTHONPATH=directory, PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "unittest", "-v", *("test_filetimer." + t for t in tests)]
    with tempfile.TemporaryFile("w+") as out:
        # A session of its own, so a timeout kills the workers the tests spawned too.
        child = subprocess.Popen(command, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status: Optional[int] = child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            status = None
        out.seek(0)
        return status, out.read()


def failed_tests(output: str) -> List[str]:
    """The Class.test names unittest reports as failed or errored (any Python 3.8+ format)."""
    names: List[str] = []
    for method, where in FAILED_TEST.findall(output):
        parts = where.split(".")
        name = "%s.%s" % (parts[1] if len(parts) > 1 else parts[0], method)
        if name not in names:
            names.append(name)
    return names


def test_names(test_code: str) -> Set[str]:
    """Every Class.test_method defined in test_filetimer.py."""
    names: Set[str] = set()
    for node in ast.parse(test_code).body:
        if isinstance(node, ast.ClassDef):
            names.update("%s.%s" % (node.name, item.name) for item in node.body
                         if isinstance(item, ast.FunctionDef) and item.name.startswith("test"))
    return names


def problem(mutant: Mutant, code: str, tests_defined: Set[str]) -> Optional[str]:
    """Why the mutant's table entry no longer fits the code, if it does not."""
    _, old, new, tests = mutant
    found = code.count(old)
    if found != 1:
        return "its old snippet is found %d times in filetimer.py, not once: %r" % (found, old)
    try:
        compile(code.replace(old, new), "filetimer.py", "exec")
    except SyntaxError as e:
        return "the mutated filetimer.py does not compile: %s" % e
    missing = [t for t in tests if t not in tests_defined]
    if missing:
        return "test_filetimer.py has no test %s" % " ".join(missing)
    return None


def check_mutant(work: str, sources: Sequence[str], mutant: Mutant) -> Tuple[str, str]:
    """One result line for the mutant, and its outcome: caught or survived."""
    name, old, new, tests = mutant
    code, test_code = sources
    directory = os.path.join(work, name)
    write_copy(directory, code.replace(old, new), test_code)
    started = time.monotonic()
    status, output = run_tests(directory, tests, TIMEOUT)
    took = "%.1f s" % (time.monotonic() - started)
    if status is None:
        return "mutant %s: caught (the tests TIMED OUT after %d s, not failed) by %s" % (
            name, TIMEOUT, " ".join(tests)), "caught"
    if status == 0:
        return "mutant %s: SURVIVED %s (%s)" % (name, " ".join(tests), took), "survived"
    catchers = failed_tests(output)
    if catchers:
        return "mutant %s: caught by %s (%s)" % (name, " ".join(catchers), took), "caught"
    last = output.strip().splitlines()[-1:] or ["no output"]
    return "mutant %s: caught by %s (exit %d, no test failure reported: %s)" % (
        name, " ".join(tests), status, last[0]), "caught"


def write_copy(directory: str, code: str, test_code: str) -> None:
    os.mkdir(directory)
    for file_name, text in (("filetimer.py", code), ("test_filetimer.py", test_code)):
        with open(os.path.join(directory, file_name), "w", encoding="utf-8") as f:
            f.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("names", nargs="*", help="run only these mutants")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.names or m[0] in args.names]
    unknown = set(args.names) - {m[0] for m in MUTANTS}
    if unknown or not mutants:
        parser.error("unknown mutant(s): %s" % " ".join(sorted(unknown)))

    sources: List[str] = []
    for file_name in ("filetimer.py", "test_filetimer.py"):  # read once: others may be editing them
        with open(os.path.join(ROOT, file_name), encoding="utf-8") as f:
            sources.append(f.read())
    code, test_code = sources
    broken: List[str] = []  # names
    tests_defined = test_names(test_code)
    for mutant in mutants:
        why = problem(mutant, code, tests_defined)
        if why:
            print("mutant %s: BROKEN: %s; update the table in .ci/mutants.py" % (mutant[0], why))
            broken.append(mutant[0])
    runnable = [m for m in mutants if m[0] not in broken]

    outcomes: List[str] = []
    work = tempfile.mkdtemp(prefix="filetimer-mutants-")
    try:
        # The baseline: the selected tests must pass unmodified, else a mutant would look caught.
        selected: List[str] = []
        for _, _, _, tests in runnable:
            selected += [t for t in tests if t not in selected]
        if selected:
            write_copy(os.path.join(work, "baseline"), code, test_code)
            status, output = run_tests(os.path.join(work, "baseline"), selected, BASELINE_TIMEOUT)
            failing = failed_tests(output)
            if status is None or (status != 0 and not failing):
                print(output[-4000:])
                print("mutants: the selected tests did not finish on the unmodified filetimer.py (%s); "
                      "no mutant was run" % ("timed out after %d s" % BASELINE_TIMEOUT if status is None
                                             else "exit %d" % status))
                return 1
            if failing:
                print(output[-4000:])
            for name, _, _, tests in runnable:
                bad = [t for t in tests if t in failing]
                if bad:
                    print("mutant %s: BROKEN: its tests fail on the unmodified filetimer.py: %s"
                          % (name, " ".join(bad)))
                    broken.append(name)
            runnable = [m for m in runnable if m[0] not in broken]
            skipped = re.findall(r"^(\w+) \(test_filetimer\.(\w+).*\) \.\.\. skipped (.*)$", output, re.MULTILINE)
            for method, cls, reason in skipped:
                print("mutants: note: %s.%s is skipped here (%s): mutants it guards may survive"
                      % (cls, method, reason))
            print("mutants: baseline: %d of %d selected tests pass on the unmodified filetimer.py"
                  % (len(selected) - len(failing), len(selected)))

        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for line, outcome in pool.map(lambda m: check_mutant(work, sources, m), runnable):
                print(line, flush=True)
                outcomes.append(outcome)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    caught, survived = outcomes.count("caught"), outcomes.count("survived")
    print("mutants: %d caught, %d survived%s" % (caught, survived, ", %d broken" % len(broken) if broken else ""))
    return 1 if survived or broken else 0


if __name__ == "__main__":
    sys.exit(main())
