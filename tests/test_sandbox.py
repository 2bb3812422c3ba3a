"""The code sandbox under attack: every attack fails, is reported with a reason, and the caller
keeps running; benign image code works; missing isolation fails closed.

Attacks run twice where it matters: with the import allow-list (the snippet is stopped early,
`code_forbidden`) and with the allow-list switched off (`allowed_imports=None`), to show the
kernel barrier - namespaces, the read-only view, seccomp, rlimits - holds on its own.
"""
import functools
import io
import os
import shutil
import socket
import stat
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from mixture.sandbox import Sandbox, SandboxLimits, SandboxUnavailable
from mixture.sandbox import seccomp
from schemas.reasons import MIXTURE_REASONS, Reason

SECRET = "s3cr3t-sandbox-test-value"
ATTACK_LIMITS = SandboxLimits(cpu_s=1, wall_s=3, memory_mb=384, file_mb=4, output_bytes=4096, max_files=4)


@functools.cache
def _no_userns() -> str:
    """Why bare bwrap cannot make namespaces on this machine ("" when it can)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    r = subprocess.run(["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"],
                       capture_output=True, timeout=30)
    return "" if r.returncode == 0 else r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}"


def require_bwrap():
    """Skip where the machine itself cannot give user namespaces (a container's seccomp profile,
    a sysctl): the sandbox fails closed there, which the fail-closed tests below check anyway.
    Anywhere bwrap works, a sandbox that does not is a failure, not a skip."""
    if _no_userns():
        pytest.skip(f"no user namespaces for bwrap on this machine: {_no_userns()}")


@pytest.fixture(scope="module")
def guarded():
    require_bwrap()
    box = Sandbox(ATTACK_LIMITS)
    box.setup()
    return box


@pytest.fixture(scope="module")
def bare():
    """The same sandbox with the import allow-list off: only the kernel stands in the way."""
    require_bwrap()
    box = Sandbox(ATTACK_LIMITS, allowed_imports=None)
    box.setup()
    return box


@pytest.fixture()
def planted(tmp_path, monkeypatch):
    """A secret file outside the scratch folder and a secret environment variable."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("SANDBOX_TEST_SECRET", SECRET)
    return tmp_path


def _png(w=64, h=48):
    rng = np.random.default_rng(0)
    arr = (rng.random((h, w, 3)) * 80 + 60).astype(np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] = 230
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _launchers() -> set[int]:
    """Pids of sandboxed launchers this test process started that are still alive (their
    config names the starting process: sandboxes of other processes on the host do not count)."""
    pids, mine = set(), f'"origin": {os.getpid()},'.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read()
            if b"/sandbox/launcher.py" in line and mine in line:
                pids.add(int(pid))
        except OSError:
            continue
    return pids


def _assert_no_leftovers(before: set[int]) -> None:
    deadline = time.monotonic() + 3
    while _launchers() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _launchers() - before, "a sandboxed process outlived its run"


# --- the attacks -------------------------------------------------------------------------
ESCAPES = {
    # (code, reason): none of these needs a forbidden import, so the allow-list plays no part
    "read_etc_passwd": ("print(open('/etc/passwd').read())", Reason.CODE_ERROR),
    "write_usr": ("open('/usr/lib/pwned', 'w').write('x')", Reason.CODE_FORBIDDEN),
    "write_root": ("open('/pwned', 'w').write('x')", Reason.CODE_FORBIDDEN),
    "write_input": ("open('/input/image.png', 'wb').write(b'x')", Reason.CODE_FORBIDDEN),
    "write_dev_shm": ("open('/dev/shm/x', 'w').write('x')", Reason.CODE_FORBIDDEN),
    "infinite_loop": ("while True:\n    pass", Reason.CODE_TIMEOUT),
    "memory_bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))",
                    Reason.CODE_RESOURCE_LIMIT),
    "numpy_memory_bomb": ("import numpy as np\nx = np.ones((1 << 30,), dtype=np.float64)",
                          Reason.CODE_RESOURCE_LIMIT),
    "gigabyte_print": ("for _ in range(1 << 20):\n    print('x' * 1023)", Reason.CODE_RESOURCE_LIMIT),
    "one_gigabyte_string": ("print('x' * (1 << 30))", Reason.CODE_RESOURCE_LIMIT),
    "big_file": ("open('big.bin', 'wb').write(b'x' * (8 << 20))", Reason.CODE_RESOURCE_LIMIT),
    "many_files": ("for i in range(50):\n    open(f'f{i}', 'w').write('x')", Reason.CODE_RESOURCE_LIMIT),
    "many_open_files": ("fs = [open('/dev/null') for _ in range(500)]", Reason.CODE_RESOURCE_LIMIT),
    "recursion": ("def f(n):\n    return f(n + 1)\nf(0)", Reason.CODE_ERROR),
    "syntax_error": ("def broken(:\n    pass", Reason.CODE_ERROR),
}
# The same attacks written with the modules they need: the allow-list refuses the import; with it
# off the kernel refuses the act (seccomp kills the process, or the path does not exist).
KERNEL = {
    "env_vars": "import os\nprint(dict(os.environ))\nfor p in os.listdir('/proc'):\n"
                "    if p.isdigit():\n        print(open(f'/proc/{p}/environ', 'rb').read())",
    "parent_proc": "import os\nprint(open(f'/proc/{PARENT}/environ', 'rb').read())",
    "host_init": "print(open('/proc/1/environ', 'rb').read(), open('/proc/1/cmdline', 'rb').read())\n"
                 "import os\nprint(open(f'/proc/{PARENT}/cmdline', 'rb').read())",
    "secret_file": "print(open(SECRET_PATH).read())",
    "write_outside": "open(OUTSIDE, 'w').write('pwned')",
    "subprocess": "import subprocess\nprint(subprocess.run(['/bin/sh', '-c', 'id'], capture_output=True))",
    "os_system": "import os\nos.system('id')",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "exec_python": "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'print(1)'])",
    "socket": "import socket\ns = socket.create_connection(('127.0.0.1', PORT), timeout=1)\ns.sendall(b'hello')",
    "ctypes_libc_fork": "import ctypes\nctypes.CDLL(None).fork()",
    "unshare": "import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_attempts_fail_with_a_reason(guarded, name):
    code, want = ESCAPES[name]
    res = guarded.run(code, {"image.png": b"not really a png"})
    assert not res.ok and res.reason == want.value, (name, res)
    assert res.detail and res.files == {}
    assert len(res.stdout) <= ATTACK_LIMITS.output_bytes
    # the caller keeps running: the same sandbox runs the next snippet normally
    assert guarded.run("print(6 * 7)").stdout == "42\n"


@pytest.mark.parametrize("name", sorted(KERNEL))
def test_kernel_refuses_what_the_allow_list_would(guarded, bare, planted, name):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    outside = planted / "written_from_sandbox.txt"
    code = (KERNEL[name].replace("PARENT", str(os.getpid())).replace("SECRET_PATH", repr(str(planted / "secret.txt")))
            .replace("OUTSIDE", repr(str(outside))).replace("PORT", str(listener.getsockname()[1])))
    with open("/proc/1/cmdline", "rb") as f:
        host_init = f.read()
    before = _launchers()
    try:
        for box in (guarded, bare):
            res = box.run(code)
            assert SECRET not in res.stdout and SECRET not in res.detail
            if name == "host_init" and b"bwrap" not in host_init and len(host_init) > 4:
                assert repr(host_init)[2:-1] not in res.stdout      # the host's pid 1 is not the one it sees
            if box is bare and name == "env_vars":     # it may look: it sees the sandbox's own variables only
                assert res.ok and "'HOME': '/output'" in res.stdout and "PATH" not in res.stdout, res
                continue
            assert not res.ok, (name, res)
            assert res.reason in (Reason.CODE_FORBIDDEN.value, Reason.CODE_ERROR.value), res
            if box is guarded and "import" in code.split("\n")[0]:
                assert res.reason == Reason.CODE_FORBIDDEN.value and res.blocked_imports, res
            with pytest.raises(BlockingIOError):
                listener.accept()                  # nobody connected
            assert not outside.exists()
    finally:
        listener.close()
    if name in ("subprocess", "os_system", "fork_bomb", "exec_python", "socket", "ctypes_libc_fork", "unshare"):
        assert res.reason == Reason.CODE_FORBIDDEN.value and "seccomp" in res.detail, res
    _assert_no_leftovers(before)


@pytest.mark.parametrize("code", [
    "import os", "import ctypes", "import subprocess", "from os import path", "import os.path",
    "__import__('os')", "__import__('ctypes')", "__builtins__['__import__']('subprocess')",
    "import importlib\nimportlib.import_module('os')", "exec('import subprocess')", "exec('import os', {})",
    "eval(\"__import__('ctypes')\")", "import sys", "import builtins", "import socket", "import shutil",
    "import PIL\nfrom . import x",
    "try:\n    import os\nexcept ImportError:\n    pass\nprint('carried on')",
])
def test_import_allow_list(guarded, code):
    res = guarded.run(code)
    assert not res.ok and res.reason == Reason.CODE_FORBIDDEN.value, (code, res)
    assert res.blocked_imports


def test_hook_bypass_still_meets_the_kernel(guarded):
    """Classic escapes from Python-level sandboxes reach os or ctypes without `import`; the
    process is still confined (the hook is defence in depth, not the barrier)."""
    bypasses = [
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        ".__init__.__globals__['system']('id')",
        "import numpy.ctypeslib as c\nc.ctypes.CDLL(None).fork()",
        "import PIL.Image\nPIL.Image.os.execv('/usr/lib/x', ['x'])",
    ]
    for code in bypasses:
        res = guarded.run(code)
        assert not res.ok and res.reason == Reason.CODE_FORBIDDEN.value and "seccomp" in res.detail, (code, res)


def test_wall_clock_kills_the_whole_namespace(bare):
    before = _launchers()
    t0 = time.monotonic()
    res = bare.run("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
                   "time.sleep(60)")
    assert res.reason == Reason.CODE_TIMEOUT.value and "wall clock" in res.detail
    assert time.monotonic() - t0 < ATTACK_LIMITS.wall_s + 3
    _assert_no_leftovers(before)


def test_stderr_flood_and_sigkill(bare):
    res = bare.run("import sys\nwhile True:\n    sys.stderr.write('y' * 1000)")
    assert res.reason == Reason.CODE_RESOURCE_LIMIT.value and "stderr over" in res.detail
    # a SIGKILL well before the cpu limit is the OOM killer's (or the snippet's own), not a timeout
    res = bare.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert res.reason == Reason.CODE_RESOURCE_LIMIT.value and "SIGKILL" in res.detail


def test_view_and_limits_inside(bare):
    res = bare.run(
        "import os, json\n"
        "print(json.dumps({'root': sorted(os.listdir('/')), 'usr': sorted(os.listdir('/usr')),\n"
        " 'bin': os.path.exists('/bin/sh') or os.path.exists('/usr/bin/sh'), 'etc': os.path.exists('/etc'),\n"
        " 'cwd': os.getcwd(), 'host': os.uname().nodename,\n"
        " 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit()),\n"
        " 'net': open('/proc/net/dev').read().count(':'), 'limits': open('/proc/self/limits').read()}))")
    assert res.ok, res
    import json
    seen = json.loads(res.stdout)
    # the root holds the sandbox's own folders plus the first component of each bound path
    binds = {p.strip("/").split("/")[0] for p in bare._runtime.binds}
    assert set(seen["root"]) <= {"dev", "lib", "lib64", "output", "proc", "sandbox", "tmp"} | binds
    assert not seen["bin"] and not seen["etc"] and seen["cwd"] == "/output" and seen["host"] == "sandbox"
    assert set(seen["usr"]) <= {"lib", "lib64"}
    assert len(seen["pids"]) <= 3            # bwrap's init, the launcher: a new pid namespace
    assert seen["net"] == 1                  # only the namespace's own loopback
    limits = {line[:26].strip(): line[26:].split() for line in seen["limits"].splitlines()[1:]}
    assert limits["Max cpu time"][0] == "1" and limits["Max processes"][0] == str(ATTACK_LIMITS.max_processes)
    assert limits["Max address space"][0] == str(ATTACK_LIMITS.memory_mb << 20)
    assert limits["Max file size"][0] == str(ATTACK_LIMITS.file_mb << 20)
    assert limits["Max open files"][0] == str(ATTACK_LIMITS.open_files)


# --- benign think-with-image code ----------------------------------------------------------
BENIGN = {
    "pil_crop": "from PIL import Image\nim = Image.open('/input/image.png')\n"
                "im.crop((16, 12, 48, 36)).save('out.png')",
    "pil_rotate": "from PIL import Image\nim = Image.open('/input/image.png')\n"
                  "im.rotate(90, expand=True).save('out.png')",
    "pil_zoom": "from PIL import Image\nim = Image.open('/input/image.png')\n"
                "im.crop((16, 12, 48, 36)).resize((128, 96), Image.BICUBIC).save('out.png')",
    "pil_contrast": "from PIL import Image, ImageEnhance, ImageOps\nim = Image.open('/input/image.png')\n"
                    "ImageOps.autocontrast(ImageEnhance.Contrast(im).enhance(2.0)).save('out.png')",
    "cv2_crop": "import cv2\nim = cv2.imread('/input/image.png')\ncv2.imwrite('out.png', im[12:36, 16:48])",
    "cv2_rotate": "import cv2\nim = cv2.imread('/input/image.png')\n"
                  "cv2.imwrite('out.png', cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE))",
    "cv2_zoom": "import cv2\nim = cv2.imread('/input/image.png')\n"
                "cv2.imwrite('out.png', cv2.resize(im[12:36, 16:48], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))",
    "cv2_contrast": "import cv2, numpy as np\nim = cv2.imread('/input/image.png', cv2.IMREAD_GRAYSCALE)\n"
                    "clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4))\n"
                    "cv2.imwrite('out.png', clahe.apply(cv2.equalizeHist(im)))\nprint(float(np.std(im)))",
}
EXPECTED_SIZE = {"crop": (32, 24), "rotate": (48, 64), "zoom": (128, 96), "contrast": (64, 48)}


@pytest.fixture(scope="module")
def worker():
    require_bwrap()
    box = Sandbox(SandboxLimits(cpu_s=10, wall_s=30))
    box.setup()
    return box


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_image_code_works(worker, name):
    src = _png()
    res = worker.run(BENIGN[name], {"image.png": src})
    assert res.ok and res.reason is None, res
    assert list(res.files) == ["out.png"]
    out = Image.open(io.BytesIO(res.files["out.png"]))
    assert out.size == EXPECTED_SIZE[name.split("_")[1]]
    assert res.files["out.png"] != src
    if name in ("pil_contrast", "cv2_zoom"):
        again = worker.run(BENIGN[name], {"image.png": src})
        assert again.files == res.files and again.stdout == res.stdout      # deterministic bytes


def test_outputs_and_inputs(worker):
    res = worker.run("data = open('/input/a.bin', 'rb').read()\nopen('copy.bin', 'wb').write(data[::-1])\n"
                     "print(len(data), open('/input/b.txt').read())", {"a.bin": b"\x00\x01\x02", "b.txt": b"hi"})
    assert res.ok and res.stdout == "3 hi\n" and res.files == {"copy.bin": b"\x02\x01\x00"}
    with pytest.raises(ValueError):
        worker.run("pass", {"../escape": b""})
    with pytest.raises(ValueError):
        worker.run("pass", {"a/b.png": b""})


# --- fail closed ---------------------------------------------------------------------------
def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def test_missing_bwrap_fails_closed(tmp_path):
    missing = str(tmp_path / "no-bwrap-here")
    with pytest.raises(SandboxUnavailable, match="bubblewrap not found"):
        Sandbox.check(missing)
    with pytest.raises(SandboxUnavailable):
        Sandbox(bwrap=missing).run("open('/tmp/ran', 'w')")


def test_failing_bwrap_fails_closed(tmp_path):
    """What bwrap says where user namespaces are disabled; the message reaches the operator."""
    fake = _script(tmp_path / "bwrap", "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    with pytest.raises(SandboxUnavailable, match="uid map: Permission denied"):
        Sandbox.check(fake)
    box = Sandbox(bwrap=fake)
    with pytest.raises(SandboxUnavailable):
        box.run("print(1)")


def test_weakened_bwrap_fails_closed(tmp_path):
    """A bwrap that starts the sandbox but shares the host's network is caught by the probe."""
    require_bwrap()
    real = Sandbox(bwrap="bwrap")
    real.setup()
    fake = _script(tmp_path / "bwrap", 'first="$1"; shift\nexec bwrap "$first" --share-net "$@"\n')
    with pytest.raises(SandboxUnavailable, match="net namespace shared with the host"):
        Sandbox.check(fake)


def test_unconfined_runner_fails_closed(tmp_path):
    """A 'bwrap' that runs the command without any isolation never gets to run the snippet."""
    marker = tmp_path / "ran-unconfined"
    fake = _script(tmp_path / "bwrap", f'touch {marker}\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n')
    with pytest.raises(SandboxUnavailable):
        Sandbox(bwrap=fake).run("print(1)")
    assert marker.exists()            # the fake ran; the snippet did not (no /sandbox on the host)


# --- the seccomp program, decision by decision -----------------------------------------------
@pytest.mark.parametrize("arch", sorted(seccomp.SYSCALLS))
def test_seccomp_program_decisions(arch):
    prog = seccomp.build_program(arch)
    table, me = seccomp.SYSCALLS[arch], seccomp.AUDIT_ARCH[arch]

    def decide(nr, arg0=0, arch_id=me):
        return seccomp.evaluate(prog, arch_id, nr, arg0)

    assert len(prog) < 4096
    for name in seccomp.DENIED:
        if name in table:
            assert decide(table[name]) == seccomp.RET_KILL_PROCESS, name
    assert decide(table["clone"], arg0=0x11) == seccomp.RET_KILL_PROCESS            # fork via clone
    assert decide(table["clone"], arg0=0x3D0F00) == seccomp.RET_ALLOW                # pthread_create
    assert decide(table["clone3"]) == seccomp.RET_ERRNO | seccomp.ENOSYS
    for nr in (0, 1, 3, 9, 63, 100):                                                  # ordinary calls
        if nr not in table.values():
            assert decide(nr) == seccomp.RET_ALLOW
    assert decide(0, arch_id=0x40000003) == seccomp.RET_KILL_PROCESS                 # i386 entry
    if arch == "x86_64":
        assert decide(seccomp.X32_SYSCALL_BIT | 1) == seccomp.RET_KILL_PROCESS
    assert len(seccomp.program_bytes(arch)) == 8 * len(prog)
    with pytest.raises(seccomp.UnsupportedArch):
        seccomp.build_program("sparc")


def test_config_and_reasons():
    from schemas.config import load_config

    cfg = load_config().mixture.sandbox
    box = Sandbox.from_config(cfg)
    assert box.limits == SandboxLimits() and box.allowed_imports == tuple(cfg.allowed_imports)
    assert {"PIL", "numpy", "cv2", "math"} <= set(box.allowed_imports)
    import pickle
    clone = pickle.loads(pickle.dumps(box))
    assert clone._runtime is None and not clone._ready and clone.limits == box.limits
    assert clone._lock is not box._lock
    with pytest.raises(ValueError):
        SandboxLimits(cpu_s=0)
    codes = {Reason.CODE_ERROR, Reason.CODE_TIMEOUT, Reason.CODE_RESOURCE_LIMIT, Reason.CODE_FORBIDDEN}
    assert codes <= MIXTURE_REASONS



def test_library_too_big_for_the_memory_limit_reads_the_same_everywhere():
    require_bwrap()
    import sys

    res = Sandbox(SandboxLimits(memory_mb=160)).run("import cv2")
    assert res.reason == Reason.CODE_RESOURCE_LIMIT.value and "memory over 160 MB" in res.detail, res
    assert sys.prefix not in res.detail and sys.base_prefix not in res.detail    # host paths scrubbed


def test_garbage_code_and_concurrent_runs(worker):
    """Model output that is not Python at all is a row's code_error; runs from several threads
    (Beam's worker threads share one sandbox) keep their own pipes and files."""
    from concurrent.futures import ThreadPoolExecutor

    for code in ("print('a')\x00", "x = '\ud800'", "", "\ufeffprint(1)"):
        res = worker.run(code)
        assert res.reason in (None, Reason.CODE_ERROR.value), (code, res)
    jobs = [f"open('n{i}.txt', 'w').write('{i}' * {i + 1})\nprint({i})" for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(worker.run, jobs))
    for i, res in enumerate(results):
        assert res.ok and res.stdout == f"{i}\n" and res.files == {f"n{i}.txt": (str(i) * (i + 1)).encode()}


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python3 to point the sandbox at")
def test_other_interpreter_and_unprivileged_host_uid():
    """`mixture.sandbox.python` runs snippets under another interpreter (its view resolved by asking
    it); a root worker whose view is reachable by others runs bwrap as nobody, so the sandbox maps
    to an unprivileged host uid and RLIMIT_NPROC binds (threads count against it)."""
    require_bwrap()
    box = Sandbox(SandboxLimits(max_processes=6), allowed_imports=None, python=SYSTEM_PYTHON)
    box.setup()
    assert box._runtime.python == os.path.realpath(SYSTEM_PYTHON)
    assert box.host_uid == (65534 if os.geteuid() == 0 else os.geteuid())
    res = box.run("import threading, time\nn = 0\ntry:\n    while True:\n"
                  "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n        n += 1\n"
                  "except RuntimeError:\n    print(n)")
    assert res.ok and 0 < int(res.stdout) < 6, res
    with pytest.raises(SandboxUnavailable, match="interpreter"):
        Sandbox(python="/nonexistent/python3").setup()


def test_forged_reports_are_no_reports():
    """The snippet can write to the status pipe (after a hook bypass): a header naming files
    outside /output, or sizes that do not add up, is ignored, never trusted."""
    from mixture.sandbox.core import _parse_status

    def status(header, payload=b""):
        import json
        return b"armed\n" + json.dumps(header).encode() + b"\n" + payload

    ok = status({"outcome": "ok", "files": [["a/b.png", 2]]}, b"hi")
    assert _parse_status(ok, 8)[2] == {"a/b.png": b"hi"}
    for bad in (status({"outcome": "ok", "files": [["../../etc/x", 2]]}, b"hi"),
                status({"outcome": "ok", "files": [["/etc/x", 2]]}, b"hi"),
                status({"outcome": "ok", "files": [["a", 5]]}, b"hi"),
                status({"outcome": "ok", "files": [["a", 1], ["a", 1]]}, b"hi"),
                status({"outcome": "ok", "files": [[str(i), 0] for i in range(9)]}),
                status(["not", "a", "dict"]), b"armed\n{broken"):
        assert _parse_status(bad, 8)[1:] == (None, {}), bad
    assert _parse_status(b"no arming line", 8)[0] is False


def test_view_binds_only_what_the_allowed_imports_need():
    import sys

    from mixture.sandbox import DEFAULT_IMPORTS
    from mixture.sandbox.view import resolve_runtime

    rt = resolve_runtime(DEFAULT_IMPORTS)
    tops = {os.path.basename(b) for b in rt.binds}
    assert {"numpy", "cv2", "PIL"} <= tops                       # the packages and (below) their libraries
    assert any(t.endswith(".libs") for t in tops)
    assert not set(rt.site_dirs) & set(rt.binds)                # never a whole site-packages folder
    assert not any(t in tops for t in ("torch", "apache_beam", "transformers", "pipelines", "schemas"))
    assert not any(b in ("/", "/usr", "/usr/bin", "/bin", "/etc", "/home", "/root") for b in rt.binds)
    assert os.path.realpath(sys.executable) in rt.binds or rt.python in rt.binds


def test_worker_check_command(capsys):
    import json

    from mixture.sandbox.__main__ import main

    assert main(["--set", "mixture.sandbox.bwrap=/nonexistent/bwrap"]) == 1
    assert "bubblewrap not found" in json.loads(capsys.readouterr().out)["why"]
    require_bwrap()
    assert main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["available"] and report["benign_snippet"]["files"] == ["out.png"]


def test_concurrent_runs_are_capped_per_process(monkeypatch):
    """Beam's worker threads share a process; at most max_concurrent snippets run at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    box = Sandbox(SandboxLimits(max_concurrent=2))
    box._ready = True                                  # no bwrap needed: _run is replaced below
    lock, now, peak = threading.Lock(), [0], [0]

    def fake_run(code, inputs, hook=True):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        return code

    monkeypatch.setattr(box, "_run", fake_run)
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(box.run, [str(i) for i in range(12)])) == [str(i) for i in range(12)]
    assert peak[0] == 2


def test_binds_under_tmp_stay_visible():
    """A checkout or venv under /tmp (CI clones anywhere) is bound after the sandbox's own /tmp tmpfs,
    never hidden by it: found when the whole suite ran from a clone in /tmp."""
    from mixture.sandbox.view import Runtime, bwrap_argv

    rt = Runtime(python="/tmp/ci/.venv/bin/python", binds=("/usr/lib", "/tmp/ci/.venv/lib/python3.11/site-packages"),
                 site_dirs=("/tmp/ci/.venv/lib/python3.11/site-packages",), masks=())
    argv = bwrap_argv("bwrap", rt, status_fd=3, json_fd=4, data_fds={}, tmp_bytes=1 << 20, scratch_bytes=1 << 20,
                      launcher_cfg="{}")
    tmpfs = [i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] == "/tmp"]
    binds = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1].startswith("/tmp/")]
    assert len(tmpfs) == 1 and binds and tmpfs[0] < min(binds)
