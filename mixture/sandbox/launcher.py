"""Runs INSIDE the sandbox, as the one program bwrap starts; stdlib only, never imported by the engine.

    bwrap (namespaces, read-only view) -> python -I -S launcher.py CONFIG_JSON
        1. close every inherited descriptor but stdin/stdout/stderr and the status pipe
        2. setrlimit: CPU seconds, address space, file size, open files, processes, no core files
        3. seccomp: no new privileges, then the deny filter (seccomp.py) - from here on no
           fork, exec or socket can succeed in this process or its threads
        4. the import allow-list (defence in depth: the snippet's `import`, `__import__` and
           exec'd code go through it; modules the allowed packages import for themselves do not)
        5. exec the snippet with cwd /output
        6. report on the status pipe ("armed" after step 3): one JSON line (outcome, blocked
           imports, file list), then the bytes of the files left in /output

The host never trusts the report for safety (everything that matters is enforced by the
kernel); it only uses it to say *why* a snippet failed. A snippet that forges it only
misreports its own outcome.
"""
import builtins
import json
import os
import resource
import sys
import traceback

SNIPPET = "/sandbox/snippet.py"
FILTER = "/sandbox/seccomp.bpf"
OUTPUT = "/output"
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class ForbiddenImport(ImportError):
    """The snippet imported a module outside the allow-list."""


def set_limits(cfg):
    mb = 1 << 20
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))        # SIGXCPU at cpu, SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_mb"] * mb,) * 2)
    # a few descriptors above the snippet's limit stay in reserve for reading /output back
    resource.setrlimit(resource.RLIMIT_NOFILE, (cfg["open_files"], cfg["open_files"] + 8))
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["max_processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def install_seccomp():
    import ctypes

    prog = open(FILTER, "rb").read()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    fprog = SockFprog(len(prog) // 8, prog)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    del sys.modules["ctypes"]


def guarded_builtins(allowed, blocked):
    """A copy of builtins whose __import__ enforces the allow-list (None: no list)."""
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        top = name.partition(".")[0]
        if allowed is not None and (level != 0 or top not in allowed):
            blocked.append(name if level == 0 else "." * level + name)
            raise ForbiddenImport(f"import of {name!r} is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    table = dict(vars(builtins))
    table["__import__"] = guarded_import
    for name in ("breakpoint", "input", "help", "exit", "quit", "copyright", "credits", "license"):
        table.pop(name, None)
    return table


def classify(exc):
    """(outcome, detail) for an exception that ended the snippet."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == "<snippet>"), "")
    text = f"{type(exc).__name__}: {exc}"[:400] + (f" ({where})" if where else "")
    if isinstance(exc, ForbiddenImport):
        return "forbidden", text
    if isinstance(exc, OSError) and exc.errno in (1, 13, 30):   # EPERM, EACCES, EROFS: outside what it may touch
        return "forbidden", text
    if isinstance(exc, MemoryError) or (isinstance(exc, ImportError) and any(
            m in str(exc) for m in ("failed to map segment", "Cannot allocate memory"))):
        return "memory", text           # a library too big to load under RLIMIT_AS counts as memory
    if isinstance(exc, OSError) and exc.errno == 27:      # EFBIG: RLIMIT_FSIZE (Python ignores SIGXFSZ)
        return "file_size", text
    if isinstance(exc, OSError) and exc.errno in (23, 24):  # ENFILE / EMFILE: RLIMIT_NOFILE
        return "open_files", text
    if isinstance(exc, OSError) and exc.errno == 28:      # ENOSPC: the /output or /tmp tmpfs is full
        return "disk", text
    return "error", text


def collect(max_files, max_bytes):
    """(names and sizes, payloads) of the regular files under /output, in name order."""
    found = []
    for root, dirs, files in os.walk(OUTPUT):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    if len(found) > max_files:
        return None, f"{len(found)} files in /output, more than max_files={max_files}"
    sizes = [os.path.getsize(p) for p in found]
    if sum(sizes) > max_bytes:
        return None, f"files in /output hold {sum(sizes)} bytes, more than {max_bytes}"
    listing, blobs = [], []
    for path, size in zip(found, sizes):
        with open(path, "rb") as fh:
            blobs.append(fh.read(size))
        listing.append([os.path.relpath(path, OUTPUT), len(blobs[-1])])
    return (listing, blobs), ""


def main():
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, 1 << 16)
    status = os.fdopen(status_fd, "wb")
    set_limits(cfg)
    sys.path.extend(cfg["site_dirs"])
    install_seccomp()
    status.write(b"armed\n")      # from here on a failure is the snippet's, not the sandbox's
    status.flush()
    blocked = []
    allowed = None if cfg["allowed_imports"] is None else frozenset(cfg["allowed_imports"])
    scope = {"__name__": "__snippet__", "__builtins__": guarded_builtins(allowed, blocked)}
    os.chdir(OUTPUT)
    outcome, detail = "ok", ""
    try:
        code = compile(open(SNIPPET, encoding="utf-8").read(), "<snippet>", "exec")
        exec(code, scope)
    except SystemExit as e:
        if e.code not in (None, 0):
            outcome, detail = "error", f"SystemExit: {e.code!r}"[:400]
    except BaseException as e:  # noqa: BLE001 - every way the snippet can end is reported, never raised
        outcome, detail = classify(e)
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a closed or broken stdout is the snippet's doing
        pass
    if blocked and outcome in ("ok", "error"):           # an import refused, even if the snippet caught it
        outcome, detail = "forbidden", f"import of {blocked[0]!r} refused" + (f"; then {detail}" if detail else "")
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        files, note = collect(cfg["max_files"], cfg["max_files"] * cfg["file_mb"] << 20)
    except (OSError, MemoryError) as e:      # the snippet left the process without descriptors or memory
        files, note = None, f"cannot read /output back: {type(e).__name__}: {e}"[:300]
        if outcome == "ok":
            outcome, detail = classify(e)[0], note
    if files is None and outcome == "ok":
        outcome, detail = "too_many_files", note
    listing, blobs = files or ([], [])
    header = {"outcome": outcome, "detail": detail, "blocked": blocked[:8], "files": listing}
    status.write(json.dumps(header).encode() + b"\n")
    for blob in blobs:
        status.write(blob)
    status.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
