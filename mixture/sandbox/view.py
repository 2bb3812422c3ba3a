"""What the sandbox can see: the bwrap command line for one snippet.

The view holds only what the interpreter and the allowed packages need, all read-only:

    /usr/lib, /usr/lib64 (+ /lib, /lib64 links)   the C library and the system's shared libraries
    <python>                                       the interpreter binary itself (not /usr/bin: no shell)
    <libpython>, <stdlib>                          its shared library and standard library
    <site-packages>/<entry>                        one bind per top-level entry of each allowed
                                                   distribution and its requirements (numpy,
                                                   numpy.libs, cv2, opencv_*.libs, PIL, pillow.libs)
    /sandbox/{launcher.py, snippet.py, seccomp.bpf}
    /input/<name>                                  each input, a read-only copy
    /output (cwd), /tmp                            size-capped tmpfs, the only writable places
    /proc (new, for the new pid namespace), /dev (null, zero, urandom, ...)

Nothing under the host's /etc, /home, /root (except the interpreter's own files), /bin,
/work, the data or the engine's code is visible; the host's environment is not passed.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
INPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The environment the snippet sees: fixed, never the parent's. One thread per numeric library,
# so RLIMIT_NPROC and RLIMIT_AS stay meaningful and results do not depend on the core count.
SANDBOX_ENV = {"HOME": "/output", "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENCV_FOR_THREADS_NUM": "1", "MALLOC_ARENA_MAX": "2"}


@dataclass(frozen=True)
class Runtime:
    """Host paths the interpreter needs, resolved once per worker."""

    python: str                       # the real interpreter binary
    binds: tuple[str, ...]            # read-only binds (files or folders), same path inside
    site_dirs: tuple[str, ...]        # site-packages folders to put on sys.path inside
    masks: tuple[str, ...]            # folders inside binds to hide behind an empty tmpfs


def _requirement_name(req: str) -> str | None:
    if "extra ==" in req.replace('"', "'").replace("extra==", "extra =="):
        return None
    return re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0] or None


def _distribution_entries(name: str, seen: set[str]) -> tuple[list[str], list[str]]:
    """(top-level paths, their site dirs) of one installed distribution and its requirements."""
    key = name.lower().replace("_", "-")
    if key in seen:
        return [], []
    seen.add(key)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return [], []
    base = str(dist.locate_file(""))
    tops = sorted({str(f).split("/", 1)[0] for f in dist.files or () if not str(f).startswith("..")})
    paths = [os.path.join(base, t) for t in tops if os.path.exists(os.path.join(base, t))]
    sites = [base]
    for req in dist.requires or ():
        dep = _requirement_name(req)
        if dep:
            p, s = _distribution_entries(dep, seen)
            paths += p
            sites += s
    return paths, sites


def resolve_runtime(allowed_imports: tuple[str, ...] | None, python: str | None = None) -> Runtime:
    """The binds for an interpreter (None: the engine's own) and these imports (None: every
    package on its sys.path - for tests that show the OS barrier alone holds). Another
    interpreter (a venv holding only PIL, numpy, OpenCV) is asked by running this file in it."""
    if python is None:
        return _local_runtime(allowed_imports)
    try:
        out = subprocess.run([python, "-I", os.path.abspath(__file__), json.dumps(allowed_imports)],
                             capture_output=True, check=True, timeout=120, env={}).stdout
        return Runtime(**{k: (v if k == "python" else tuple(v)) for k, v in json.loads(out).items()})
    except (OSError, subprocess.SubprocessError, ValueError, TypeError) as e:
        raise RuntimeError(f"cannot resolve the sandbox interpreter {python!r}: {e}") from None


def reachable_by_others(path: str) -> bool:
    """Whether an unprivileged user can reach `path`: every folder above it searchable by
    others, the path itself readable (and searchable, for a folder). Only the top is checked."""
    path = os.path.abspath(path)
    try:
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            if not os.stat("/" + "/".join(parts[:i])).st_mode & stat.S_IXOTH:
                return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def _local_runtime(allowed_imports: tuple[str, ...] | None) -> Runtime:
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    binds = [p for p in ("/usr/lib", "/usr/lib64") if os.path.isdir(p)]
    binds.append(python)
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        lib = os.path.join(libdir, soname)
        if os.path.exists(lib):
            binds.append(lib)
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]
    binds.append(stdlib)
    # the interpreter's own site folders (pip, Debian's python3-* packages) stay hidden
    masks = [p for p in (os.path.join(stdlib, "site-packages"), os.path.join(stdlib, "dist-packages"),
                         os.path.join(os.path.dirname(stdlib), "python3", "dist-packages")) if os.path.isdir(p)]
    site_dirs: list[str] = []
    if allowed_imports is None:
        site_dirs = [p for p in sys.path if "-packages" in p and os.path.isdir(p)]
        binds += site_dirs
    else:
        seen: set[str] = set()
        dists = md.packages_distributions()
        for name in allowed_imports:
            if name in sys.stdlib_module_names:
                continue
            found = dists.get(name) or []
            if not found and importlib.util.find_spec(name) is None:
                continue                     # not installed: the import fails inside, like anywhere
            for dist in found:
                paths, sites = _distribution_entries(dist, seen)
                binds += paths
                site_dirs += sites
    site_dirs = list(_dedupe(site_dirs))
    masks = [m for m in masks if m not in site_dirs and not any(m.startswith(d + "/") for d in site_dirs)]
    return Runtime(python=python, binds=_dedupe(binds), site_dirs=tuple(site_dirs), masks=tuple(masks))


def _dedupe(paths: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in paths:
        if p not in out and not any(p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def bwrap_argv(bwrap: str, runtime: Runtime, *, status_fd: int, json_fd: int, data_fds: dict[str, int],
               tmp_bytes: int, scratch_bytes: int, launcher_cfg: str) -> list[str]:
    """The full command: namespaces, the view above, then the launcher. `data_fds` maps a path
    inside the sandbox to a readable descriptor whose contents become that read-only file."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
            "--clearenv", "--json-status-fd", str(json_fd)]
    for key, value in SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    # /tmp first: the binds below may live under /tmp (a checkout or venv there), and a tmpfs mounted
    # after them would hide them; mounted first, the binds land inside it
    argv += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    for path in runtime.binds:
        argv += ["--ro-bind", path, path]
    for path in runtime.masks:
        argv += ["--tmpfs", path, "--remount-ro", path]
    argv += ["--symlink", "usr/lib", "/lib"]
    if os.path.isdir("/usr/lib64"):
        argv += ["--symlink", "usr/lib64", "/lib64"]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(scratch_bytes), "--perms", "0700", "--tmpfs", "/output",
             "--ro-bind", LAUNCHER, "/sandbox/launcher.py"]
    for dest, fd in data_fds.items():
        argv += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
    # the root and /dev are bwrap's own tmpfs: read-only, so /output and /tmp (size-capped) are
    # the only places a snippet can write
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/output",
             "--", runtime.python, "-I", "-S", "-B", "/sandbox/launcher.py", launcher_cfg]
    return argv


if __name__ == "__main__":           # run by resolve_runtime inside another interpreter
    _allowed = json.loads(sys.argv[1])
    print(json.dumps(dataclasses.asdict(_local_runtime(None if _allowed is None else tuple(_allowed)))))
