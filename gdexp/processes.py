"""Processes behind runs: one shutdown path for Ctrl-C and SIGTERM, and whether a run's process lives."""
from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

# Tags that say which process holds a run open (see identity()) and when it last said so.
HOST_TAG = "gdexp.host"
PID_TAG = "gdexp.pid"
START_TAG = "gdexp.process_start"
MACHINE_TAG = "gdexp.machine"
HEARTBEAT_TAG = "gdexp.heartbeat"
FAILURE_TAG = "gdexp.failure"
# One store write per open run this often; a run on another machine counts as dead once its
# heartbeat is older than HEARTBEAT_TIMEOUT (generous: a busy shared server may lag).
HEARTBEAT_EVERY = 30.0
HEARTBEAT_TIMEOUT = 600.0
# How long stopped workers get to close their own runs before they are killed.
GRACE_SECONDS = 5.0
LAUNCHER_ENV = "GDEXP_LAUNCHER_PID"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in the main thread. A KeyboardInterrupt, so that SIGTERM takes every
    path Ctrl-C takes (runs end KILLED, sweeps stop); ``signum`` gives the exit status."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_status(error: BaseException) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


# The signal that interrupted this process, once one has. Python runs a signal handler
# wherever the main thread is, which may be a finalizer or a weakref callback: there the
# exception it raises is swallowed ("Exception ignored in ..."). The signal is then still
# pending, and the next check() raises it again.
_pending: list = []


# Store calls under way in the main thread (see deferred), and a signal that arrived
# meanwhile, raised once they are over.
_deferring: list = []
_deferred: list = []


def _on_signal(signum, frame):
    # Workers hear it before this process unwinds, so they can end their own runs KILLED
    # while the launcher waits for them (stop_descendants).
    _pending.append(int(signum))
    signal_all(descendants(), signal.SIGTERM)
    if _deferring:
        _deferred.append(int(signum))
        return
    raise Interrupted(signum)


# Set by the command line (cli.main): its process is short-lived, so what exists once its
# big imports are done may be frozen for good (collection_paused).
_FREEZE = {"on": False}


def freeze_after_imports() -> None:
    _FREEZE["on"] = True


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No garbage collection inside, for a block that builds long-lived objects by the
    hundred thousand (importing mlflow and opening a store): every full collection walks
    all objects built so far, and inside such a block they grow from one to the next
    (measured in a 100-job sweep: five of them, 0.5 s of its 7 s). In the command line's
    process (``freeze_after_imports``) the objects that exist on the way out are then
    frozen (``gc.freeze``: later full collections skip them, here and in forked processes;
    measured: the sweep's collections 1.2 s → 0.2 s); cyclic garbage among them would stay,
    which a module graph hardly leaves. Collection then resumes as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _FREEZE["on"]:
            gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise Interrupted when the block is over, not inside it (main
    thread; the descendants are signalled at once). For store calls: cut short half-way, one
    can leave its database connection inside a transaction, and the lock that transaction
    holds (sqlite's) then stalls this very process's next writes, the KILLED statuses of the
    clean-up among them, 20 s each."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        if not _deferring and _deferred:
            signum = _deferred[-1]
            _deferred.clear()
            raise Interrupted(signum)  # noqa: B012 - the signal outranks the block's error


def check() -> None:
    """Raise the interruption again if a signal arrived and its exception was swallowed (a
    long loop calls this now and then: the descent's progress line does)."""
    if _pending:
        raise Interrupted(_pending[-1])


def _unraisable(hook):
    def quiet(unraisable):
        if isinstance(unraisable.exc_value, Interrupted):
            return  # swallowed where it was raised: check() raises it again, once
        hook(unraisable)
    quiet.gdexp = True
    return quiet


# Set on import, not where _on_signal is installed: a launcher's worker installs it for its
# jobs (job_signals) and runs (tracking.run_status), and an Interrupted swallowed there must
# not print "Exception ignored in ..." on the sweep's stderr either.
if not getattr(sys.unraisablehook, "gdexp", False):
    sys.unraisablehook = _unraisable(sys.unraisablehook)


def install() -> None:
    """Ctrl-C and SIGTERM raise Interrupted in the main thread after signalling every
    descendant process (joblib's loky workers, submitit's job processes)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    # a gdexp process answers both itself, even when started blocking them (see below)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


_answering: list = []


def answer_ctrl_c_for_children() -> None:
    """Processes this one starts from now on begin with Ctrl-C blocked, and this process
    answers it for them (it stops its descendants itself, see _on_signal).

    A Ctrl-C in the terminal reaches the whole process group. A launcher's helper process that
    is not gdexp's (submitit's local controller) would report it with a traceback of its own.
    A child inherits its parent's signal mask, so the main thread blocks SIGINT; a thread
    started just before keeps receiving it for this process, and Python runs the handler in
    the main thread as always, once a blocking call there returns (launchers poll: ≤ 1 s).
    A gdexp process unblocks it again (install)."""
    if _answering or threading.current_thread() is not threading.main_thread():
        return
    receiver = threading.Thread(target=threading.Event().wait, name="gdexp-ctrl-c",
                                daemon=True)
    receiver.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    _answering.append(receiver)


def answer_ctrl_c_here() -> None:
    """Undo answer_ctrl_c_for_children (the receiving thread stays, idle)."""
    if _answering and threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        _answering.clear()


def installed() -> bool:
    return signal.getsignal(signal.SIGTERM) is _on_signal


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up after a signal, a second Ctrl-C must not cut the cleanup short."""
    with _handling(signal.SIG_IGN, threading.current_thread() is threading.main_thread()):
        yield


@contextlib.contextmanager
def _handling(handler, active: bool = True) -> Iterator[None]:
    """Ctrl-C and SIGTERM go to ``handler`` inside the block (when ``active``; signal
    handlers can only be set in the main thread), to what they went to before after it."""
    if not active:
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


class ReaderSafe:
    """A text stream whose reader may go away (`gdexp run -m … | head -3`): from then on what
    is written to it goes nowhere instead of raising, and the command finishes its runs (a
    closed pager is no reason to fail an experiment). Everything else is the stream's own."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # no file behind it: nothing to redirect
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)  # the buffered rest, and the interpreter's last flush, land here
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def reader_safe_output() -> Iterator[None]:
    """sys.stdout and sys.stderr as ReaderSafe streams for the duration."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, ReaderSafe) else ReaderSafe(s)
                              for s in streams)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


def is_launcher() -> bool:
    """Whether this process is the `gdexp run` that launched the sweep (or the single run),
    as opposed to a worker process running some of its jobs."""
    return os.environ.get(LAUNCHER_ENV) in (None, str(os.getpid()))


def _stat(pid: int) -> Optional[tuple[str, int, int]]:
    """(state, parent pid, start time in clock ticks since boot) from /proc, None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: Optional[int] = None) -> list[tuple[int, int]]:
    """(pid, start time) of every process below ``root`` (default: this one). Linux /proc;
    elsewhere empty."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z":
                children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and stat[2] == start


def signal_all(processes: list[tuple[int, int]], sig: int) -> None:
    for pid, start in processes:
        if _alive(pid, start):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _ignores_sigterm(pid: int) -> bool:
    """Whether the process ignores SIGTERM (multiprocessing's resource tracker does)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def stop_descendants(grace: float = GRACE_SECONDS) -> int:
    """SIGTERM every descendant, wait up to ``grace`` seconds for those that heed it, SIGKILL
    what is left (twice: a process may have started children meanwhile). Returns how many
    there were."""
    procs = descendants()
    signal_all(procs, signal.SIGTERM)
    heeding = [p for p in procs if not _ignores_sigterm(p[0])]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(*p) for p in heeding):
        time.sleep(0.05)
    for _ in range(2):
        left = [p for p in procs if _alive(*p)] + [p for p in descendants() if p not in procs]
        signal_all(left, signal.SIGKILL)
        procs += [p for p in left if p not in procs]
    # reap our own children so none lingers as a zombie
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return len(procs)


@contextlib.contextmanager
def job_signals() -> Iterator[None]:
    """During a job in a worker process: SIGTERM (from the launcher) and Ctrl-C (a terminal
    signals its whole foreground group) raise Interrupted, so the job's run ends KILLED."""
    with _handling(_on_signal, not is_launcher()
                   and threading.current_thread() is threading.main_thread()):
        yield


# ---- which process holds a run ---------------------------------------------------------------

def _machine() -> str:
    """This kernel boot and pid namespace: pids are comparable only within one of them."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id",):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def identity() -> dict[str, str]:
    """Tags naming this process: host, pid, its start time, and the machine (boot and pid
    namespace) in which that pid means something."""
    stat = _stat(os.getpid())
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            START_TAG: str(stat[2]) if stat else "", MACHINE_TAG: _machine(),
            HEARTBEAT_TAG: str(int(time.time()))}


def gone(tags: dict, now: Optional[float] = None) -> Optional[str]:
    """Why the process that holds a run open is provably gone, or None when it may live (or
    the run does not say which process holds it)."""
    pid, host = tags.get(PID_TAG), tags.get(HOST_TAG, "?")
    if not pid or not pid.isdigit():
        return None
    machine = _machine()
    if machine and tags.get(MACHINE_TAG) == machine:
        stat = _stat(int(pid))
        if stat is None or stat[0] == "Z":
            return f"process {pid} on {host} ended without closing the run"
        if tags.get(START_TAG) and str(stat[2]) != tags[START_TAG]:
            return f"process {pid} on {host} ended without closing the run (pid reused)"
        return None
    beat = tags.get(HEARTBEAT_TAG, "")
    if not beat.isdigit():
        return None
    age = (time.time() if now is None else now) - int(beat)
    if age > HEARTBEAT_TIMEOUT:
        return (f"no heartbeat from process {pid} on {host} for {age / 60:.0f} min "
                f"(limit {HEARTBEAT_TIMEOUT / 60:.0f})")
    return None


class _Heartbeats:
    """One daemon thread per process calling each open run's beat every HEARTBEAT_EVERY s."""

    def __init__(self) -> None:
        self.beats: dict[str, Callable[[], None]] = {}
        self.lock = threading.Lock()
        self.beating = threading.Lock()  # held while the beats write (see paused)
        self.thread: Optional[threading.Thread] = None

    def add(self, run_id: str, beat: Callable[[], None]) -> None:
        with self.lock:
            self.beats[run_id] = beat
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="gdexp-heartbeat",
                                               daemon=True)
                self.thread.start()

    def remove(self, run_id: str) -> None:
        with self.lock:
            self.beats.pop(run_id, None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No beat is writing to the store meanwhile: a process forked inside inherits no
        lock that the beating thread held (sqlite's, the connection pool's) and no
        half-done request."""
        with self.beating:
            yield

    def _loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_EVERY)
            with self.lock:
                beats = list(self.beats.values())
            with self.beating:
                for beat in beats:
                    with contextlib.suppress(Exception):  # a busy store: the next beat will do
                        beat()


heartbeats = _Heartbeats()
