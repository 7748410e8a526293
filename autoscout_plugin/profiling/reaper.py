"""The supervisor every trial (and the launcher's real run) runs under: nothing the command starts outlives it.

    python -I -S reaper.py [--parent PID] [--timeout S] [--grace S] [--status FD] [--cleanup PATH ...] -- CMD ...

`runner.run_supervised` starts it as its own direct child, in a session of its own, and it starts CMD. Killing
a process group is not enough to end a trial: a grandchild that calls `setsid` leaves the group, and when the
tuner itself is killed (SIGTERM from a scheduler, `timeout`, SIGKILL, the OOM killer) nobody is left to kill
anything. So the supervisor
- asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), and checks right after that its
  parent is still the one that started it: the parent may have died before the request was made;
- becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process of CMD's tree whose parent dies is
  reparented to it rather than to init, whatever session or group it moved to, so it stays findable;
- when CMD exits, when `--timeout` passes, or when SIGTERM/SIGINT/SIGHUP or its parent's death stops it,
  sends the signal (SIGTERM for the first three) to every descendant, found by walking the ppid links in
  /proc, SIGKILLs what still runs `--grace` seconds later, and reaps them all;
- when stopped, also removes the `--cleanup` paths (the caller's temp files): its caller is dying or gone,
  and may not get to remove them itself;
- reports CMD's exit status, a timeout, or a failure to start CMD as JSON lines on `--status` FD (without
  one, the failure is printed), and exits like a shell would: CMD's exit code, 128+N for a death by signal
  N, 124 after a timeout, 127 when CMD could not start.

Standard library only, and run as a file, not with `-m`: importing the `autoscout_plugin` package costs a
few tenths of a second (numpy), paid by every trial. Elsewhere than Linux there is no prctl: the parent is
polled every half second, and CMD runs in a session of its own whose group is what gets signalled, so a
process that leaves that session escapes there.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals that stop the supervisor (and are passed on to CMD's tree)."""
TIMEOUT_EXIT = 124
"""Exit code after `--timeout` passed (as `timeout(1)`)."""
SPAWN_FAILED_EXIT = 127
"""Exit code when CMD could not be started (as a shell's)."""
DEFAULT_GRACE_S = 3.0
"""Seconds between the stop signal and SIGKILL: enough for a process to exit cleanly, short enough for a stop."""
KILL_WAIT_S = 5.0
"""How long SIGKILLed processes are waited for: one stuck in the kernel (uninterruptible I/O) is given up on."""

_LINUX = sys.platform.startswith("linux") and Path("/proc/self/stat").exists()
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.5
"""Longest sleep of the main loop: how late a dead parent is noticed where the kernel does not signal it."""
_SWEEP_POLL_S = 0.05


def main(argv: Sequence[str] | None = None) -> int:
    args, cmd = _parse(list(sys.argv[1:] if argv is None else argv))
    return _Supervisor(args).run(cmd)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="reaper.py", description="Run CMD; end every process it starts with it.")
    parser.add_argument("--parent", type=int, default=os.getppid(),
                        help="the pid that started this supervisor (default: the parent now); another parent"
                             " means that one already died")
    parser.add_argument("--timeout", type=float, help="stop CMD's tree after this many seconds")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help="seconds between the stop signal and SIGKILL (default %(default)s)")
    parser.add_argument("--status", type=int, help="a file descriptor to write JSON reports to")
    parser.add_argument("--cleanup", action="append", default=[], metavar="PATH",
                        help="a file or directory to remove when stopped by a signal or the parent's death")
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command after --")
    split = argv.index("--")
    return parser.parse_args(argv[:split]), argv[split + 1:]


class _Supervisor:
    """One run of CMD, and the signals, reaping and sweeps around it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.parent: int = args.parent
        self.timeout_s: float | None = args.timeout
        self.grace_s: float = args.grace
        self.status_fd: int | None = args.status
        self.cleanup: list[str] = args.cleanup
        self.child: subprocess.Popen[bytes] | None = None
        self.wakeup = _route_signals()
        _arm_kernel()

    def run(self, cmd: list[str]) -> int:
        stop = self._stop_signal(wait_s=0)  # the parent may be gone, or have stopped us, already
        if stop is not None:
            _remove(self.cleanup)
            return 128 + stop
        try:
            # Elsewhere than Linux, CMD's own session is the tree the sweep signals.
            child = self.child = subprocess.Popen(cmd, start_new_session=not _LINUX)
        except OSError as exc:
            if self.status_fd is None:
                print(f"reaper.py: {exc}", file=sys.stderr)
            self._report(spawn_error=[exc.errno, exc.strerror, exc.filename])
            return SPAWN_FAILED_EXIT
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while True:
            self._reap()
            if child.returncode is not None:
                self._report(exit=child.returncode)
                self._sweep(signal.SIGTERM)  # what it left running
                code = child.returncode if child.returncode >= 0 else 128 - child.returncode
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._report(timeout=True)
                self._sweep(signal.SIGTERM)
                code = TIMEOUT_EXIT
                break
            stop = self._stop_signal(wait_s=_POLL_S if left is None else min(left, _POLL_S))
            if stop is not None:
                self._sweep(stop)
                code = 128 + stop
                break
        if stop is not None or self._stop_signal(wait_s=0) is not None:  # also: stopped during the sweep
            _remove(self.cleanup)
        return code

    def _stop_signal(self, wait_s: float) -> int | None:
        """The stop signal that arrived (waiting up to `wait_s` for any signal), SIGTERM when the parent is
        gone, else None."""
        stop = None
        if select.select([self.wakeup], [], [], wait_s)[0]:
            while True:
                try:
                    data = os.read(self.wakeup, 512)
                except BlockingIOError:
                    break
                stop = stop or next((s for s in data if s in STOP_SIGNALS), None)
        if stop is None and os.getppid() != self.parent:
            stop = signal.SIGTERM
        return stop

    def _reap(self) -> None:
        """Reap every exited child: CMD (its status lands in `child.returncode`) and orphans reparented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                self.child.returncode = os.waitstatus_to_exitcode(status)

    def _sweep(self, first: int) -> None:
        """`first` to every process of the tree, SIGKILL to what still runs after the grace, until none is
        left: a dying process's children are reparented here meanwhile, and show up in the next look."""
        assert self.child is not None
        signalled: set[int] = set()
        kill_at = time.monotonic() + self.grace_s
        while True:
            self._reap()
            targets = _tree(self.child.pid)
            now = time.monotonic()
            if not targets or now >= kill_at + KILL_WAIT_S:
                return
            for target in targets:
                if now >= kill_at or target not in signalled:
                    try:
                        os.kill(target, signal.SIGKILL if now >= kill_at else first)
                    except (ProcessLookupError, PermissionError):  # gone meanwhile
                        pass
                    signalled.add(target)
            time.sleep(_SWEEP_POLL_S)

    def _report(self, **fields: Any) -> None:
        if self.status_fd is None:
            return
        try:
            os.write(self.status_fd, (json.dumps(fields) + "\n").encode())
        except OSError:  # the reader is gone: there is nobody to tell
            pass


def _route_signals() -> int:
    """Catch the stop signals and SIGCHLD through a wakeup pipe, so the main loop sleeps in `select` and
    wakes at once on either; the pipe's read end."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in (*STOP_SIGNALS, signal.SIGCHLD):
        signal.signal(signum, lambda *_: None)
    return read_fd


def _arm_kernel() -> None:
    """SIGTERM on the parent's death, and orphans of the tree reparented here (Linux; elsewhere, polling)."""
    if not _LINUX:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((_PR_SET_PDEATHSIG, signal.SIGTERM), (_PR_SET_CHILD_SUBREAPER, 1)):
        # Varargs read as unsigned long: pass them as such. A refusal (a seccomp filter) leaves the polling.
        libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0))


def _tree(cmd_pid: int) -> list[int]:
    """What a sweep signals: on Linux every live descendant of this process (CMD's whole tree, orphans
    included, since they are reparented here), elsewhere CMD's process group, as a negative pid."""
    if not _LINUX:
        try:
            os.killpg(cmd_pid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [-cmd_pid]
    children: dict[int, list[int]] = {}
    running: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat.rsplit(b")", 1)[-1].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] not in (b"Z", b"X"):  # a zombie is dead: reaped here or by its (dying) parent
            running.add(pid)
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            todo.append(pid)
            if pid in running:
                found.append(pid)
    return found


def _remove(paths: Sequence[str]) -> None:
    for name in paths:
        path = Path(name)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:  # not ours to remove after all: leave it
            pass


if __name__ == "__main__":
    sys.exit(main())
