"""The sandbox's seccomp filter: a classic-BPF program, built here, installed by the launcher.

Why a deny-list and not an allow-list: CPython, numpy, OpenCV and Pillow together use a wide
and version-dependent set of system calls; an allow-list that misses one kills benign code on
some worker. What the filter must stop is small and stable: starting processes or programs
(fork, vfork, clone without CLONE_THREAD, execve, execveat), sockets, and the kernel surfaces
an escape would go through (ptrace, mounts, namespaces, keyrings, bpf, perf, userfaultfd,
io_uring, modules, kexec). A forbidden call kills the whole process (SIGSYS), so the outcome
is unambiguous (`code_forbidden`) and no library can swallow the error and carry on.

Threads stay allowed (clone with CLONE_THREAD); clone3 hides its flags behind a pointer BPF
cannot read, so it answers ENOSYS and glibc falls back to clone, whose flags are checked.
A program for another architecture's calling convention (i386 on x86_64, x32) is killed.

The filter is built on the host (plain bytes, `struct sock_filter[]`) and handed to the
launcher, which installs it with prctl after PR_SET_NO_NEW_PRIVS; bwrap's own --seccomp
cannot be used because it would apply before the launcher is exec'd, and execve is denied.
"""
from __future__ import annotations

import platform
import struct

# linux/filter.h, linux/seccomp.h, linux/audit.h
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
ENOSYS = 38
CLONE_THREAD = 0x00010000
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16        # struct seccomp_data (args are u64; low word first)
X32_SYSCALL_BIT = 0x40000000

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Denied calls by name; numbers from asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64).
DENIED = ("fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace", "process_vm_readv",
          "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "keyctl",
          "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "init_module", "finit_module",
          "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "open_by_handle_at",
          "name_to_handle_at", "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "syslog",
          "fsopen", "fsconfig", "fsmount", "move_mount", "open_tree", "fspick", "mount_setattr", "quotactl",
          "lookup_dcookie", "uselib", "iopl", "ioperm")

SYSCALLS = {
    "x86_64": {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone": 56, "clone3": 435,
               "socket": 41, "socketpair": 53, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
               "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
               "perf_event_open": 298, "userfaultfd": 323, "init_module": 175, "finit_module": 313,
               "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "swapon": 167,
               "swapoff": 168, "open_by_handle_at": 304, "name_to_handle_at": 303, "io_uring_setup": 425,
               "io_uring_enter": 426, "io_uring_register": 427, "acct": 163, "syslog": 103, "fsopen": 430,
               "fsconfig": 431, "fsmount": 432, "move_mount": 429, "open_tree": 428, "fspick": 433,
               "mount_setattr": 442, "quotactl": 179, "lookup_dcookie": 212, "uselib": 134, "iopl": 172,
               "ioperm": 173},
    # aarch64 has no fork, vfork, uselib, iopl or ioperm: glibc forks through clone
    "aarch64": {"execve": 221, "execveat": 281, "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199,
                "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
                "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217,
                "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "init_module": 105,
                "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
                "reboot": 142, "swapon": 224, "swapoff": 225, "open_by_handle_at": 265, "name_to_handle_at": 264,
                "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "acct": 89,
                "syslog": 116, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "move_mount": 429,
                "open_tree": 428, "fspick": 433, "mount_setattr": 442, "quotactl": 60, "lookup_dcookie": 18},
}


class UnsupportedArch(RuntimeError):
    """No syscall table for this machine: the sandbox cannot be confined here."""


def machine_arch() -> str:
    return platform.machine()


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def build_program(arch: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions, for `arch` (default: this machine)."""
    arch = arch or machine_arch()
    if arch not in SYSCALLS:
        raise UnsupportedArch(f"no seccomp syscall table for architecture {arch!r} (have: {sorted(SYSCALLS)})")
    table = SYSCALLS[arch]
    prog = [_insn(BPF_LD_W_ABS, OFF_ARCH),
            _insn(BPF_JEQ_K, AUDIT_ARCH[arch], jt=1, jf=0),
            _insn(BPF_RET_K, RET_KILL_PROCESS),
            _insn(BPF_LD_W_ABS, OFF_NR)]
    if arch == "x86_64":   # x32 ABI numbers alias the 64-bit table with a high bit set
        prog += [_insn(BPF_JGE_K, X32_SYSCALL_BIT, jt=0, jf=1), _insn(BPF_RET_K, RET_KILL_PROCESS)]
    for name in DENIED:
        if name in table:
            prog += [_insn(BPF_JEQ_K, table[name], jt=0, jf=1), _insn(BPF_RET_K, RET_KILL_PROCESS)]
    prog += [_insn(BPF_JEQ_K, table["clone3"], jt=0, jf=1), _insn(BPF_RET_K, RET_ERRNO | ENOSYS),
             # clone: a thread (CLONE_THREAD set) is allowed, anything else is a new process
             _insn(BPF_JEQ_K, table["clone"], jt=0, jf=4),
             _insn(BPF_LD_W_ABS, OFF_ARG0),
             _insn(BPF_JSET_K, CLONE_THREAD, jt=0, jf=1),
             _insn(BPF_RET_K, RET_ALLOW),
             _insn(BPF_RET_K, RET_KILL_PROCESS),
             _insn(BPF_RET_K, RET_ALLOW)]
    return prog


def program_bytes(arch: str | None = None) -> bytes:
    """`struct sock_filter[]` as the kernel reads it (native byte order)."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in build_program(arch))


def evaluate(prog: list[tuple[int, int, int, int]], arch_id: int, nr: int, arg0: int = 0) -> int:
    """Run the program on one system call the way the kernel would (only the opcodes used
    above): what `build_program` decides, checkable without installing it."""
    data = {OFF_NR: nr, OFF_ARCH: arch_id, OFF_ARG0: arg0 & 0xFFFFFFFF}
    acc, pc = 0, 0
    while pc < len(prog):
        code, jt, jf, k = prog[pc]
        if code == BPF_LD_W_ABS:
            acc = data[k]
        elif code == BPF_RET_K:
            return k
        elif code in (BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K):
            hit = {BPF_JEQ_K: acc == k, BPF_JGE_K: acc >= k, BPF_JSET_K: bool(acc & k)}[code]
            pc += jt if hit else jf
        else:
            raise ValueError(f"opcode {code:#x} not understood")
        pc += 1
    raise ValueError("program fell off its end")
