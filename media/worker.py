"""Decode isolation: a crash or hang on one file becomes a rejected row, never a dead worker.

`media.decode.isolation: subprocess` (the default) runs every item in a small pool of
persistent worker processes (fresh interpreters, `python -m media.worker`: no fork of a
threaded Beam worker), shared by all media steps of one Python process and sized by
`media.decode.workers`.
The parent sends an `ItemTask` over a pipe and waits at most `media.decode.timeout_s`:
  - the child answers: its `ItemResult` (item errors are results, not exceptions);
  - the child dies (segfault, abort, OOM kill): `decoder_crashed`, with the signal;
  - the time runs out: the child is killed (SIGKILL) -> `decode_timeout`.
Either way a fresh child replaces it before the next item. Start-up (imports) is not
counted against the item timeout. `in_process` calls `process_item` directly (debugging,
apples-to-apples timing in the benchmark): no protection against crashes or hangs.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Optional

from media.process import ItemResult, ItemTask, process_item, run_fault
from schemas.config import DecodeConfig
from schemas.reasons import Reason

START_TIMEOUT_S = 300.0


def _serve(conn) -> None:
    """Worker process main loop: ItemTask in, ItemResult out, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when we stop
    try:
        import av

        av.logging.set_level(av.logging.PANIC)        # decoder chatter about broken files: no
    except Exception:  # noqa: BLE001
        pass
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if task.fault:
                run_fault(task.fault)
            result = process_item(task)
        except Exception as e:  # noqa: BLE001 - an unexpected error is this item's problem only
            result = ItemResult(kind=task.kind, reason=Reason.UNDECODABLE.value,
                                detail=f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)[-300:]}")
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Child:
    """One worker: `python -m media.worker FD`, talking over a socketpair. A fresh interpreter
    (not multiprocessing's spawn, which re-imports the parent's __main__): nothing of the
    parent (threads, Beam state) is inherited, and it starts the same under any launcher."""

    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "media.worker", str(child_sock.fileno())],
                                     pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL, env=env,
                                     cwd=PROJECT_ROOT)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        if not self.conn.poll(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("media decode worker did not start")
        try:
            self.conn.recv()
        except EOFError:
            self.kill()
            raise RuntimeError(f"media decode worker failed to start ({_signal_name(self.proc.returncode)})") from None
        self.tasks = 0

    @property
    def exitcode(self) -> Optional[int]:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


def _signal_name(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class DecodePool:
    """`size` persistent decode processes; `run` blocks until one is free. Thread-safe: Beam
    may call it from several DoFn threads of one worker process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Child] = []
        self._lock = threading.Lock()

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.proc.poll() is None:
                    return child
                child.kill()              # died while idle (killed from outside): replace it
        return _Child()

    def run(self, task: ItemTask, timeout_s: float) -> ItemResult:
        with self._slots:
            child = self._take()
            t0 = time.perf_counter()
            try:
                child.conn.send(task)
                if not child.conn.poll(timeout_s):
                    child.kill()
                    return ItemResult(kind=task.kind, reason=Reason.DECODE_TIMEOUT.value,
                                      detail=f"no result after {timeout_s:g} s; decoder killed")
                result = child.conn.recv()
            except (EOFError, OSError):
                code = child.exitcode
                child.kill()
                return ItemResult(kind=task.kind, reason=Reason.DECODER_CRASHED.value,
                                  detail=f"decoder process {_signal_name(code)} after "
                                         f"{time.perf_counter() - t0:.2f} s")
            child.tasks += 1
            with self._lock:
                self._idle.append(child)
            return result

    def close(self) -> None:
        """Stop the idle workers. A busy one returns to the pool when its item is done and
        is stopped by the next close, at exit, or when this process's end closes its pipe."""
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()


_POOLS: dict[int, DecodePool] = {}
_POOLS_LOCK = threading.Lock()


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS.values()):
        pool.close()


def shared_pool(size: int) -> DecodePool:
    """The process-wide pool of this size (steps and DoFn instances share it)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(size)
        if pool is None:
            pool = _POOLS[size] = DecodePool(size)
        return pool


class IsolatedRunner:
    def __init__(self, dc: DecodeConfig) -> None:
        self.timeout_s = dc.timeout_s
        self.pool = shared_pool(dc.workers)

    def run(self, task: ItemTask) -> ItemResult:
        return self.pool.run(task, self.timeout_s)


class InProcessRunner:
    """No isolation: for debugging and for timing without the pipe. Test faults are ignored."""

    def run(self, task: ItemTask) -> ItemResult:
        if task.fault:
            from dataclasses import replace

            task = replace(task, fault=None)
        return process_item(task)


def make_runner(dc: DecodeConfig):
    return IsolatedRunner(dc) if dc.isolation == "subprocess" else InProcessRunner()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
