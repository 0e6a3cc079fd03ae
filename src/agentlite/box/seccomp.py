"""The syscall filter every process of a sandbox box runs under, in one place.

The policy is an allow-list's opposite on purpose: agents run arbitrary developer tools (compilers,
node, git, package managers), so everything is allowed except the calls below, each of which is a
known way out of a namespace sandbox or into the host kernel's attack surface. Denied calls fail
with EPERM (``clone3`` with ENOSYS, so libc falls back to ``clone``, whose flags the filter can
read). The filter is built once with libseccomp (``pyseccomp``), exported as BPF and cached in a
file named by the policy's hash; bwrap installs it for the box's init (``--seccomp FD``) and
:data:`LOADER` installs the same bytes for every command started later with ``exec``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Namespace flags of clone(2)/unshare(2). CLONE_NEWTIME (0x80) sits inside clone's exit-signal
# byte, so it can only be asked for through unshare (and clone3, which is refused as a whole).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
)  # fmt: skip
TIOCSTI = 0x5412
TIOCLINUX = 0x541C


@dataclass(frozen=True)
class Rule:
    """Deny ``syscall`` (only when argument ``arg`` has ``mask`` bits equal to ``value``, if set)."""

    syscall: str
    why: str
    arg: int | None = None
    mask: int = 0
    value: int = 0
    errno: int = errno.EPERM


def _flag_rules(syscall: str, flags: tuple[int, ...], why: str) -> tuple[Rule, ...]:
    # A filter can only compare masked values for equality, so "any namespace flag set" is one
    # rule per flag (rules on the same call are OR-ed).
    return tuple(Rule(syscall, why, arg=0, mask=flag, value=flag) for flag in flags)


POLICY: tuple[Rule, ...] = (
    Rule("ptrace", "reads and writes other processes' memory and registers"),
    Rule("process_vm_readv", "reads another process's memory"),
    Rule("process_vm_writev", "writes another process's memory"),
    Rule("keyctl", "the kernel keyring is not namespaced: other users' keys, kernel bugs"),
    Rule("add_key", "the kernel keyring is not namespaced"),
    Rule("request_key", "the kernel keyring is not namespaced; can call up to user space helpers"),
    Rule("bpf", "loads programs into the kernel; a long record of verifier escapes"),
    Rule("perf_event_open", "side channels on host processes and a large kernel surface"),
    Rule("userfaultfd", "stalls kernel page faults at will: the classic race-widening exploit tool"),
    Rule("kexec_load", "replaces the running kernel"),
    Rule("kexec_file_load", "replaces the running kernel"),
    Rule("init_module", "loads kernel code"),
    Rule("finit_module", "loads kernel code"),
    Rule("delete_module", "unloads kernel code"),
    Rule("mount", "would remount the box's read-only views or the host's filesystems"),
    Rule("umount2", "would uncover what the box's mounts hide"),
    Rule("pivot_root", "changes the box's root"),
    Rule("move_mount", "the new mount API: same power as mount"),
    Rule("open_tree", "the new mount API: clones mounts, including hidden ones"),
    Rule("fsopen", "the new mount API: creates filesystems"),
    Rule("fsconfig", "the new mount API"),
    Rule("fsmount", "the new mount API"),
    Rule("fspick", "the new mount API: reconfigures existing mounts"),
    Rule("mount_setattr", "the new mount API: would clear read-only flags"),
    Rule("setns", "joins other namespaces (the host's, through leaked descriptors)"),
    *_flag_rules("unshare", (*CLONE_NAMESPACE_FLAGS, CLONE_NEWTIME), "a new namespace regains capabilities"),
    *_flag_rules("clone", CLONE_NAMESPACE_FLAGS, "a new namespace regains capabilities"),
    Rule(
        "clone3", "flags in memory a filter cannot read; ENOSYS: libc falls back to clone", errno=errno.ENOSYS
    ),
    Rule("io_uring_setup", "io_uring bypasses syscall filtering and has a long record of bugs"),
    Rule("io_uring_enter", "io_uring"),
    Rule("io_uring_register", "io_uring"),
    Rule("ioctl", "TIOCSTI types into the terminal", arg=1, mask=0xFFFFFFFF, value=TIOCSTI),
    Rule("ioctl", "TIOCLINUX can also inject console input", arg=1, mask=0xFFFFFFFF, value=TIOCLINUX),
    Rule("acct", "switches process accounting for the whole host"),
    Rule("quotactl", "filesystem quotas of the host"),
    Rule("quotactl_fd", "filesystem quotas of the host"),
    Rule("syslog", "reads the kernel log (addresses that defeat KASLR)"),
    Rule("open_by_handle_at", "opens files by handle, around every mount and path check"),
    Rule("reboot", "reboots the host"),
    Rule("swapon", "host swap"),
    Rule("swapoff", "host swap"),
)

#: Installs the filter from fd ``argv[1]`` (BPF as exported by libseccomp), then execs ``argv[4:]``.
#: Run as ``python -S -I -c LOADER FILTER_FD USERNS_FD UID CMD...``. The loader holds capabilities the
#: box's own processes lack until its filter is in, and drops them only then: such a process cannot be
#: opened through ``/proc/PID/mem`` by them, so the box cannot write code into the loader before its
#: filter is installed. A root box's loader starts as the box's uid 0 with every capability of the
#: box's user namespace (``USERNS_FD`` is -1). An image box's uid is not its namespace's root, and a
#: uid that is not root there loses every capability at exec: so its loader starts as host root in
#: the box's other namespaces, clears its groups (the box's namespace refuses setgroups), enters the
#: box's user namespace from ``USERNS_FD`` itself (every capability there, a uid none of the box's)
#: and takes the box's uid and gid ``UID`` after its filter is in. Unless it ends as uid and gid
#: ``UID``, with no supplementary group (an image box) and no capability, nothing runs (exit 125).
LOADER = (
    "import ctypes,os,sys\n"
    "def fail(what):sys.stderr.write(f'agentlite: cannot {what}\\n');sys.exit(125)\n"
    "def die(what):fail(what+': '+os.strerror(ctypes.get_errno()))\n"
    "fd,userns,uid=map(int,sys.argv[1:4]);data=os.pread(fd,os.fstat(fd).st_size,0);os.close(fd)\n"
    "class F(ctypes.Structure):_fields_=[('len',ctypes.c_ushort),('filter',ctypes.c_void_p)]\n"
    "buf=ctypes.create_string_buffer(data,len(data))\n"
    "prog=F(len(data)//8,ctypes.addressof(buf))\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "if userns>=0:\n"
    " try:os.setgroups([])\n"
    " except OSError:die('clear the supplementary groups')\n"
    " if libc.setns(userns,0x10000000)!=0:die('enter the box user namespace')\n"  # CLONE_NEWUSER
    " os.close(userns)\n"
    "if libc.prctl(38,1,0,0,0)!=0:die('set no_new_privs')\n"  # PR_SET_NO_NEW_PRIVS
    "if libc.prctl(22,2,ctypes.byref(prog),0,0)!=0:die('install the syscall filter')\n"  # PR_SET_SECCOMP, FILTER
    "for c in range(64):libc.prctl(24,c,0,0,0)\n"  # PR_CAPBSET_DROP (fails without CAP_SETPCAP: checked below)
    "libc.prctl(47,4,0,0,0)\n"  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    # PR_CAPBSET_READ: a uid 0 would get what is left at exec (a non-root uid under no_new_privs cannot)
    "if any(libc.prctl(23,c,0,0,0)==1 for c in range(64)):die('drop the bounding set')\n"
    # gid first, while the loader still has CAP_SETGID and CAP_SETUID in the box's namespace
    "if os.getresgid()!=(uid,)*3 and libc.setresgid(uid,uid,uid)!=0:die(f'take gid {uid}')\n"
    "if os.getresuid()!=(uid,)*3 and libc.setresuid(uid,uid,uid)!=0:die(f'take uid {uid}')\n"
    "head=(ctypes.c_uint32*2)(0x20080522,0);caps=(ctypes.c_uint32*6)()\n"  # capset: nothing left
    "if libc.capset(head,caps)!=0:die('drop capabilities')\n"
    "if os.getresuid()!=(uid,)*3 or os.getresgid()!=(uid,)*3:fail(f'run as uid and gid {uid}')\n"
    "if uid and os.getgroups():fail('clear the supplementary groups')\n"
    "if libc.capget(head,caps)!=0 or any(caps):fail('verify that no capability is left')\n"
    "try:os.execvp(sys.argv[4],sys.argv[4:])\n"
    "except OSError as e:sys.stderr.write(f'{sys.argv[4]}: {e.strerror}\\n');sys.exit(127)\n"
)


def _extra_arches() -> list[str]:
    # A 64-bit x86 process can still enter the kernel through the 32-bit (int 0x80) and x32 tables,
    # with other syscall numbers: the filter must cover those too.
    return ["X86", "X32"] if platform.machine() == "x86_64" else []


def policy_hash() -> str:
    text = repr((POLICY, platform.machine(), _extra_arches(), 1))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_bpf() -> bytes:
    """Compile :data:`POLICY` with libseccomp. Raises ImportError/OSError when it is missing."""
    import tempfile

    import pyseccomp as sc

    flt = sc.SyscallFilter(sc.ALLOW)
    for arch in _extra_arches():
        flt.add_arch(getattr(sc.Arch, arch))
    for rule in POLICY:
        try:
            sc.resolve_syscall(sc.Arch.NATIVE, rule.syscall)
        except (ValueError, RuntimeError, OSError):
            continue  # not a syscall on this architecture
        args = [] if rule.arg is None else [sc.Arg(rule.arg, sc.MASKED_EQ, rule.mask, rule.value)]
        flt.add_rule(sc.ERRNO(rule.errno), rule.syscall, *args)
    # No-new-privs is set by bwrap itself and by setpriv for exec'd commands; the BPF carries none.
    flt.set_attr(sc.Attr.CTL_NNP, 0)
    with tempfile.TemporaryFile() as f:
        flt.export_bpf(f)
        f.seek(0)
        return f.read()


def bpf_file(cache_dir: Path) -> Path:
    """The compiled filter, built on first use and cached in ``cache_dir`` under the policy's hash."""
    path = cache_dir / f".seccomp-{policy_hash()}.bpf"
    if path.is_file():
        return path
    data = build_bpf()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".seccomp-{os.getpid()}-{os.urandom(4).hex()}.tmp"
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # several hosts may build it at once; each writes the same bytes
    return path
