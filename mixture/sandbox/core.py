"""Run one untrusted Python snippet in a bubblewrap sandbox and say what happened.

    Sandbox.run(code, inputs)
      memfds: snippet, seccomp filter, inputs --bwrap --ro-bind-data--> /sandbox, /input (read-only)
      bwrap: new user/pid/net/ipc/uts/cgroup namespaces, no capabilities, cleared environment
        python -I -S launcher.py: rlimits -> seccomp -> import allow-list -> exec(snippet), cwd /output
      host: reads stdout (<= output_bytes), stderr (tail), the status pipe (outcome + /output files)
            until EOF or the wall clock; past either limit it kills the whole namespace
      -> SandboxResult(ok, reason, detail, stdout, files, wall_s)

What one worker holds: one snippet's code, inputs, stdout and produced files (bounded by the
limits); no state is shared between runs, so `run` may be called from several threads.
Everything that confines the snippet is enforced by the kernel (namespaces, mounts, rlimits,
seccomp); the import allow-list only turns obvious misuse into a clear `code_forbidden`.
If any mechanism is missing the sandbox raises `SandboxUnavailable` and never runs the code.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from mixture.sandbox import seccomp
from mixture.sandbox.view import LAUNCHER, INPUT_NAME, Runtime, bwrap_argv, reachable_by_others, resolve_runtime
from schemas.reasons import Reason

# What think-with-image code needs: images, arrays and plain computation; nothing that reaches
# the file system beyond open(), the process, the network or the interpreter's internals.
DEFAULT_IMPORTS = ("PIL", "numpy", "cv2", "math", "cmath", "statistics", "random", "itertools", "functools",
                   "collections", "operator", "heapq", "bisect", "re", "json", "string", "fractions", "decimal",
                   "io", "typing", "dataclasses", "enum", "copy")
_MB = 1 << 20
# A worker running as root runs bwrap as this user instead, when everything the view binds is
# reachable by it: the sandbox then maps to an unprivileged host uid and RLIMIT_NPROC binds
# (Linux exempts processes of host root from it).
UNPRIVILEGED_ID = 65534
_STDERR_TAIL = 2000
_SAFE_NAME = re.compile(r"^[^/\x00][^\x00]{0,1023}$")      # relative, no NUL (".." parts refused apart)
_SIGNALS = {signal.SIGSYS: "SIGSYS", signal.SIGXCPU: "SIGXCPU", signal.SIGKILL: "SIGKILL",
            signal.SIGSEGV: "SIGSEGV", signal.SIGABRT: "SIGABRT", signal.SIGBUS: "SIGBUS", signal.SIGXFSZ: "SIGXFSZ"}


class SandboxUnavailable(RuntimeError):
    """Isolation is missing or broken on this worker: the stage fails closed, no code runs."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-snippet limits (config: mixture.sandbox)."""

    cpu_s: float = 5                 # RLIMIT_CPU: SIGXCPU, then SIGKILL a second later
    wall_s: float = 10               # killed from outside (the whole namespace) past this
    memory_mb: int = 512             # RLIMIT_AS: address space of the snippet's process
    file_mb: int = 32                # RLIMIT_FSIZE: largest file it may write
    output_bytes: int = 65536        # stdout (and, separately, stderr) beyond this: killed
    max_files: int = 8               # files it may leave in /output
    max_processes: int = 16          # RLIMIT_NPROC (threads count); fork/exec are denied by seccomp anyway
    open_files: int = 64             # RLIMIT_NOFILE
    tmp_mb: int = 64                 # size of the /tmp tmpfs
    max_concurrent: int = 0          # snippets running at once in this process (0: one per CPU core)

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s", "memory_mb", "file_mb", "output_bytes", "max_files", "max_processes",
                     "open_files", "tmp_mb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_concurrent < 0:
            raise ValueError("SandboxLimits.max_concurrent must be >= 0 (0: one per CPU core)")
        if self.open_files < 16:
            raise ValueError("SandboxLimits.open_files must be >= 16: the interpreter needs a few itself")


@dataclass
class SandboxResult:
    ok: bool
    reason: Optional[str]            # a schemas.reasons.Reason value when not ok
    detail: str                      # short, clean text: which limit, the exception, the stderr tail
    stdout: str                      # at most limits.output_bytes
    files: dict[str, bytes] = field(default_factory=dict)   # what the snippet left in /output
    wall_s: float = 0.0
    blocked_imports: list[str] = field(default_factory=list)  # imports the allow-list refused


class _Streams:
    """The four pipes of one run, read until EOF, the wall clock or a size limit."""

    def __init__(self, limits: SandboxLimits, fds: dict[str, int]) -> None:
        self.caps = {"stdout": limits.output_bytes, "stderr": limits.output_bytes,
                     "status": limits.max_files * limits.file_mb * _MB + 65536, "json": 65536}
        self.data = {name: bytearray() for name in fds}
        self.seen = dict.fromkeys(fds, 0)
        self.sel = selectors.DefaultSelector()
        for name, fd in fds.items():
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, name)

    def pump(self, deadline: float) -> Optional[str]:
        """Read until every pipe is closed (None) or a limit is hit ('wall' or the pipe's name)."""
        open_fds = len(self.sel.get_map())
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return "wall"
            for key, _ in self.sel.select(timeout=min(left, 0.5)):
                name = key.data
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.sel.unregister(key.fd)
                    open_fds -= 1
                    continue
                self.seen[name] += len(chunk)
                if name == "stderr":              # keep the tail; the total is still capped
                    self.data[name] = (self.data[name] + chunk)[-_STDERR_TAIL:]
                else:
                    self.data[name] += chunk[: self.caps[name] - len(self.data[name])]
                if self.seen[name] > self.caps[name]:
                    return name
        return None

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fd)
        self.sel.close()


class Sandbox:
    """Runs model-written code confined; see the module docstring and README "The code sandbox"."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(),
                 allowed_imports: Optional[tuple[str, ...]] = DEFAULT_IMPORTS, bwrap: str = "bwrap",
                 python: Optional[str] = None) -> None:
        self.limits = limits
        # None switches the import hook off: only for tests showing the kernel barrier alone holds
        self.allowed_imports = None if allowed_imports is None else tuple(allowed_imports)
        self.bwrap = bwrap
        self.python = python             # the snippets' interpreter; None: the engine's own
        self.host_uid: Optional[int] = None        # the host uid the sandbox maps to (set by setup)
        self._drop = False
        self._runtime: Optional[Runtime] = None
        self._filter: Optional[bytes] = None
        self._bwrap_path: Optional[str] = None     # resolved on this worker's PATH (the run's env is empty)
        self._ready = False                        # set only after the probe passed
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg) -> "Sandbox":
        """From a `schemas.config.SandboxConfig` (mixture.sandbox)."""
        limits = SandboxLimits(cpu_s=cfg.cpu_s, wall_s=cfg.wall_s, memory_mb=cfg.memory_mb, file_mb=cfg.file_mb,
                               output_bytes=cfg.output_bytes, max_files=cfg.max_files,
                               max_processes=cfg.max_processes, open_files=cfg.open_files, tmp_mb=cfg.tmp_mb,
                               max_concurrent=getattr(cfg, "max_concurrent", 0))
        return cls(limits, tuple(cfg.allowed_imports), bwrap=cfg.bwrap, python=getattr(cfg, "python", None))

    def __getstate__(self) -> dict:
        # host paths and the probe result are per worker: resolved again after unpickling
        state = {**self.__dict__, "_runtime": None, "_filter": None, "_bwrap_path": None, "host_uid": None,
                 "_drop": False, "_ready": False}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- fail closed -----------------------------------------------------------------------
    @staticmethod
    def check(bwrap: str = "bwrap") -> None:
        """Raise SandboxUnavailable, naming the missing mechanism, unless a probe snippet runs
        confined: bwrap present, seccomp armed, no privileges, and new user, pid, net, ipc, uts
        and mount namespaces (compared with this process's)."""
        Sandbox(SandboxLimits(wall_s=60), allowed_imports=None, bwrap=bwrap).setup()

    def setup(self) -> None:
        """Once per worker: resolve the view, build the filter, probe. Idempotent and thread-safe:
        no snippet runs before the probe has passed."""
        with self._lock:
            if not self._ready:
                self._setup()
                self._ready = True

    def _setup(self) -> None:
        path = shutil.which(self.bwrap)
        if path is None:
            raise SandboxUnavailable(f"bubblewrap not found ({self.bwrap!r} is not an executable on PATH): "
                                     "install the Debian package 'bubblewrap'; refusing to run code unconfined")
        self._bwrap_path = path
        try:
            self._filter = seccomp.program_bytes()
        except seccomp.UnsupportedArch as e:
            raise SandboxUnavailable(f"seccomp: {e}; refusing to run code unconfined") from None
        try:
            runtime = resolve_runtime(self.allowed_imports, self.python)
        except RuntimeError as e:
            raise SandboxUnavailable(f"{e}; refusing to run code unconfined") from None
        self._drop = os.geteuid() == 0 and all(
            reachable_by_others(p) for p in (path, LAUNCHER, *runtime.binds))
        self._runtime = runtime
        try:
            try:
                self._probe()
            except SandboxUnavailable:
                if not self._drop:
                    raise
                self._drop = False       # e.g. user namespaces for unprivileged users disabled: run as root-mapped
                self._probe()
        except BaseException:
            self._runtime = None
            raise

    def _probe(self) -> None:
        kinds = ("user", "pid", "net", "ipc", "uts", "mnt")
        code = ("import os, json\nst = open('/proc/self/status').read()\n"
                "f = lambda k: st.split(k + ':')[1].split()[0]\n"
                f"ns = {{k: os.readlink('/proc/self/ns/' + k) for k in {kinds!r}}}\n"
                "print(json.dumps({'seccomp': f('Seccomp'), 'nnp': f('NoNewPrivs'), 'cap': f('CapEff'), "
                "'ns': ns, 'host': os.uname().nodename}))\n")
        res = self._run(code, {}, hook=False)   # the probe needs os; it is our code
        try:
            seen = json.loads(res.stdout)
        except ValueError:
            raise SandboxUnavailable(f"bwrap at {self.bwrap!r}: the probe snippet did not run "
                                     f"({res.reason}: {res.detail}); refusing to run code unconfined") from None
        mine = {k: os.readlink(f"/proc/self/ns/{k}") for k in kinds}
        shared = [k for k in kinds if seen["ns"][k] == mine[k]]
        problems = ([f"{k} namespace shared with the host" for k in shared]
                    + (["seccomp filter not active"] if seen["seccomp"] != "2" else [])
                    + (["no_new_privs not set"] if seen["nnp"] != "1" else [])
                    + (["capabilities kept"] if int(seen["cap"], 16) else []))
        if problems:
            raise SandboxUnavailable(f"bwrap at {self.bwrap!r} does not confine: {', '.join(problems)}; "
                                     "refusing to run code unconfined")
        # bwrap (not setuid) maps the sandbox to the uid that runs it
        self.host_uid = UNPRIVILEGED_ID if self._drop else os.geteuid()

    # --- one snippet -----------------------------------------------------------------------
    def run(self, code: str, inputs: Optional[dict[str, bytes]] = None) -> SandboxResult:
        """Run `code` with `inputs` as read-only /input/<name>; never raises on what the code
        does (every outcome is a result), raises SandboxUnavailable if isolation is missing."""
        if not self._ready:
            self.setup()
        for name in inputs or {}:
            if not INPUT_NAME.match(name):
                raise ValueError(f"input name {name!r}: use letters, digits, '.', '_', '-'")
        with _slots(self.limits.max_concurrent):       # the wall clock starts once a slot is free
            return self._run(code, inputs or {})

    def _run(self, code: str, inputs: dict[str, bytes], hook: bool = True) -> SandboxResult:
        lim, rt = self.limits, self._runtime
        assert rt is not None and self._filter is not None
        t0 = time.monotonic()
        owned: list[int] = []
        try:
            # surrogatepass: a lone surrogate in model output fails inside (code_error), not here
            data_fds = {"/sandbox/snippet.py": _memfd(code.encode("utf-8", "surrogatepass"), owned),
                        "/sandbox/seccomp.bpf": _memfd(self._filter, owned)}
            for name, blob in sorted(inputs.items()):
                data_fds[f"/input/{name}"] = _memfd(blob, owned)
            status_r, status_w = _pipe(owned)
            json_r, json_w = _pipe(owned)
            cfg = {"cpu_s": lim.cpu_s, "memory_mb": lim.memory_mb, "file_mb": lim.file_mb,
                   "open_files": lim.open_files, "max_processes": lim.max_processes, "max_files": lim.max_files,
                   "status_fd": status_w, "site_dirs": list(rt.site_dirs), "origin": os.getpid(),
                   "allowed_imports": list(self.allowed_imports) if hook and self.allowed_imports is not None else None}
            argv = bwrap_argv(self._bwrap_path or self.bwrap, rt, status_fd=status_w, json_fd=json_w, data_fds=data_fds,
                              tmp_bytes=lim.tmp_mb * _MB, scratch_bytes=lim.max_files * lim.file_mb * _MB,
                              launcher_cfg=json.dumps(cfg))
            try:
                ids = dict(user=UNPRIVILEGED_ID, group=UNPRIVILEGED_ID, extra_groups=[]) if self._drop else {}
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env={}, start_new_session=True,
                                        pass_fds=[status_w, json_w, *data_fds.values()], cwd="/", **ids)
            except OSError as e:
                raise SandboxUnavailable(f"cannot start bwrap at {self.bwrap!r}: {e}; "
                                         "refusing to run code unconfined") from None
            for fd in (status_w, json_w, *data_fds.values()):
                os.close(fd)
                owned.remove(fd)
            streams = _Streams(lim, {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(),
                                     "status": status_r, "json": json_r})
            try:
                tripped = streams.pump(t0 + lim.wall_s)
                if tripped is not None:
                    _kill(proc, streams.data["json"])
                rc, cpu = _wait(proc, max(t0 + lim.wall_s, time.monotonic()) + 2)
                if rc is None:                   # pipes closed, process still there: killed at the wall clock
                    _kill(proc, streams.data["json"])
                    rc, cpu = _wait(proc, None)
                    tripped = tripped or "wall"
            finally:
                streams.close()
                proc.stdout.close()
                proc.stderr.close()
            return self._verdict(rc, cpu, tripped, streams, time.monotonic() - t0)
        finally:
            for fd in owned:
                os.close(fd)

    def _verdict(self, rc: int, cpu: float, tripped: Optional[str], streams: _Streams, wall: float) -> SandboxResult:
        lim = self.limits
        out = bytes(streams.data["stdout"]).decode("utf-8", "replace")
        err = _clean(bytes(streams.data["stderr"]).decode("utf-8", "replace"))
        armed, header, files = _parse_status(bytes(streams.data["status"]), lim.max_files)
        blocked = list(header.get("blocked", [])) if header else []

        def fail(reason: Reason, detail: str) -> SandboxResult:
            return SandboxResult(False, reason.value, self._scrub(detail)[:500], out, {}, wall, blocked)

        if tripped == "wall":
            return fail(Reason.CODE_TIMEOUT, f"wall clock over {lim.wall_s:g} s; the sandbox was killed")
        if tripped in ("stdout", "stderr"):
            return fail(Reason.CODE_RESOURCE_LIMIT,
                        f"{tripped} over output_bytes={lim.output_bytes}; the sandbox was killed")
        if tripped == "status":
            return fail(Reason.CODE_RESOURCE_LIMIT, "files in /output over the size limit; the sandbox was killed")
        if not armed:
            # bwrap or the launcher failed before the snippet ran (no user namespaces, a bad mount,
            # seccomp refused, a broken binary): never a row's fault, and the code never ran
            raise SandboxUnavailable(f"bwrap at {self.bwrap!r} could not start the sandbox (exit {rc}): "
                                     f"{err or 'no message'}; refusing to run code unconfined")
        if header is None:
            sig = rc - 128 if rc > 128 else (-rc if rc < 0 else 0)
            name = _SIGNALS.get(sig, f"signal {sig}") if sig else f"exit status {rc}"
            if sig == signal.SIGSYS:
                return fail(Reason.CODE_FORBIDDEN, "killed by seccomp: a forbidden system call (process, exec, "
                                                   "socket or kernel interface)")
            # SIGXCPU at the soft limit; SIGKILL at the hard one only if the snippet caught SIGXCPU -
            # otherwise a SIGKILL came from the kernel's OOM killer (or the snippet itself)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= math.ceil(lim.cpu_s)):
                return fail(Reason.CODE_TIMEOUT, f"cpu time over {lim.cpu_s:g} s ({name})")
            if sig == signal.SIGKILL:
                return fail(Reason.CODE_RESOURCE_LIMIT, "killed (SIGKILL) before the cpu limit: the kernel's "
                                                        "out-of-memory killer, or the snippet itself")
            if sig == signal.SIGXFSZ:
                return fail(Reason.CODE_RESOURCE_LIMIT, f"file size over {lim.file_mb} MB ({name})")
            return fail(Reason.CODE_ERROR, f"the snippet ended without a report ({name}): {err[-300:]}".strip())
        outcome, detail = header.get("outcome"), str(header.get("detail", ""))
        if outcome == "ok":
            return SandboxResult(True, None, "", out, files, wall, blocked)
        if outcome == "forbidden":
            return fail(Reason.CODE_FORBIDDEN, detail)
        limit = {"memory": f"memory over {lim.memory_mb} MB", "file_size": f"file size over {lim.file_mb} MB",
                 "open_files": f"open files over {lim.open_files}", "disk": "the /output or /tmp tmpfs is full",
                 "too_many_files": f"more than max_files={lim.max_files} files"}.get(outcome)
        if limit:
            return fail(Reason.CODE_RESOURCE_LIMIT, f"{limit}: {detail}")
        return fail(Reason.CODE_ERROR, detail or err[-300:])


    def _scrub(self, text: str) -> str:
        """Host paths out of `detail`, so a rejected row reads the same on every worker."""
        rt = self._runtime
        if rt is not None:
            for path in sorted(rt.site_dirs, key=len, reverse=True):
                text = text.replace(path, "<site-packages>")
            for path in sorted((b for b in rt.binds if not b.startswith("/usr/")), key=len, reverse=True):
                text = text.replace(path, "<python>")
        return text


def _memfd(data: bytes, owned: list[int]) -> int:
    fd = os.memfd_create("sandbox-data")     # close-on-exec: only bwrap gets it, through pass_fds
    owned.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _pipe(owned: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    owned += [r, w]
    return r, w


_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _slots(max_concurrent: int) -> threading.BoundedSemaphore:
    """One semaphore per process and size: Beam runs many DoFn threads per worker process, and
    more snippets than cores would make the wall clock (not the code) decide timeouts and pile
    up their memory. 0: one slot per CPU core this process may use."""
    n = max_concurrent or len(os.sched_getaffinity(0)) or 1
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(n, threading.BoundedSemaphore(n))


def _wait(proc: subprocess.Popen, deadline: Optional[float]) -> tuple[Optional[int], float]:
    """(bwrap's exit status, CPU seconds of it and every process it reaped - the snippet's), or
    (None, 0) if it is still running at `deadline` (None: wait as long as it takes)."""
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            return None, 0.0
        time.sleep(0.01)


def _kill(proc: subprocess.Popen, json_status: bytearray) -> None:
    """Kill bwrap's process group and the sandbox's first process; --die-with-parent and the
    pid namespace take every other process in the sandbox down with them."""
    for line in bytes(json_status).splitlines():
        try:
            pid = json.loads(line).get("child-pid")
        except ValueError:
            continue
        if pid:
            _signal(os.kill, pid)
    _signal(os.killpg, proc.pid)


def _signal(send, pid: int) -> None:
    try:
        send(pid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _parse_status(raw: bytes, max_files: int) -> tuple[bool, Optional[dict], dict[str, bytes]]:
    """(armed, header, files) from the status pipe: b"armed\n", a JSON line, the file bytes.
    The snippet can write to this pipe too, so anything malformed - sizes that do not add up,
    too many files, a name that is not a plain relative path - counts as no report at all."""
    if not raw.startswith(b"armed\n"):
        return False, None, {}
    head, sep, rest = raw[6:].partition(b"\n")
    try:
        header = json.loads(head) if sep else None
        if not isinstance(header, dict) or not isinstance(header.get("files", []), list) \
                or len(header.get("files", [])) > max_files:
            return True, None, {}
        files, pos = {}, 0
        for name, size in header.get("files", []):
            if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name.split("/") or name in files:
                return True, None, {}
            files[name] = rest[pos:pos + int(size)]
            pos += int(size)
        return (True, header, files) if pos == len(rest) else (True, None, {})
    except (ValueError, TypeError, AttributeError):
        return True, None, {}


def _clean(text: str) -> str:
    """Printable, one-line-per-line text for `detail` (no control characters)."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text).strip()
