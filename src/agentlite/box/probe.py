"""What this machine can run boxes with, checked for real (used by ``auto`` and ``agentlite doctor``)."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One prerequisite: whether it holds, what was seen, and how to fix it when it does not."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def check_bwrap() -> Check:
    path = shutil.which("bwrap")
    if path is None:
        return Check("bwrap", False, "bubblewrap is not installed", "apt-get install -y bubblewrap")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    return Check("bwrap", True, f"{version} at {path}")


def check_util_linux() -> Check:
    missing = [tool for tool in ("nsenter", "setpriv") if shutil.which(tool) is None]
    if missing:
        return Check(
            "nsenter/setpriv", False, f"missing: {', '.join(missing)}", "apt-get install -y util-linux"
        )
    return Check("nsenter/setpriv", True, "found")


@functools.cache
def check_user_namespaces() -> Check:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Check("user namespaces", False, "cannot test without bwrap", "apt-get install -y bubblewrap")
    probe = subprocess.run(
        [
            bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--",
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return Check(
            "user namespaces",
            False,
            f"bwrap could not make a sandbox: {probe.stderr.strip()[:200]}",
            "enable unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 "
            "(and kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04)",
        )
    return Check("user namespaces", True, "bwrap made a user+pid+net namespace sandbox")


def check_hardware_virtualization() -> Check:
    if platform.system() == "Darwin":
        ok = platform.machine() == "arm64"
        return Check(
            "hardware virtualization",
            ok,
            f"macOS on {platform.machine()}",
            None if ok else "BoxLite needs Apple Silicon on macOS",
        )
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    words = set(flags.split())
    found = sorted(words & {"vmx", "svm"})
    if found:
        return Check("hardware virtualization", True, f"cpu flag {found[0]}")
    return Check(
        "hardware virtualization",
        False,
        "no vmx or svm flag in /proc/cpuinfo (a software hypervisor cannot boot BoxLite's guest kernel)",
        "run on bare metal or a VM with nested virtualization enabled; boxes use the sandbox runtime here",
    )


def check_kvm() -> Check:
    if platform.system() == "Darwin":
        return Check("/dev/kvm", True, "not needed on macOS (Hypervisor.framework)")
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return Check("/dev/kvm", False, "missing", "load the kvm module (modprobe kvm_intel or kvm_amd)")
    except PermissionError:
        return Check("/dev/kvm", False, "not accessible", "add your user to the `kvm` group")
    os.close(fd)
    return Check("/dev/kvm", True, "present and accessible")


def check_boxlite() -> Check:
    try:
        from importlib.metadata import version

        import boxlite  # noqa: F401
    except ImportError as exc:
        return Check("boxlite", False, f"cannot import: {exc}", "pip install 'boxlite==0.10.8'")
    return Check("boxlite", True, f"boxlite {version('boxlite')} importable")


def check_socat() -> Check:
    path = shutil.which("socat")
    if path is None:
        return Check("socat", False, "missing: sandbox boxes in modes egress/allowlist, and boxes with exposed "
                     "endpoints, cannot start", "apt-get install -y socat")  # fmt: skip
    return Check("socat", True, f"network bridges into boxes ({path})")


def limit_checks() -> list[Check]:
    """What holds a sandbox box in here: its host user, the syscall filter, and each cgroup limit."""
    import pwd

    from agentlite.box import box_user, cgroups, seccomp

    checks = []
    if os.geteuid() != 0:
        checks.append(Check("box user", True, f"boxes run as your uid {os.getuid()} (not root)"))
    else:
        try:
            entry = pwd.getpwnam(box_user.BOX_USER)
            checks.append(
                Check("box user", True, f"boxes run as `{entry.pw_name}` (uid {entry.pw_uid}), not root")
            )
        except KeyError:
            checks.append(Check("box user", True, f"`{box_user.BOX_USER}` is made on first box start",
                                "scripts/install.sh makes it ahead"))  # fmt: skip
    try:
        size = len(seccomp.build_bpf())
        checks.append(Check("syscall filter", True, f"{len(seccomp.POLICY)} rules, {size} bytes of BPF"))
    except (ImportError, OSError) as exc:
        checks.append(
            Check("syscall filter", False, f"cannot build: {exc}", "apt-get install -y libseccomp2")
        )
    support = cgroups.probe()
    version = f"cgroup v{support.version}" if support.version else "no cgroups"
    for limit in cgroups.LIMIT_NAMES:
        if support.holds(limit):
            checks.append(Check(f"limit {limit}", True, f"enforced ({version})"))
        else:
            checks.append(Check(f"limit {limit}", False, support.missing.get(limit, version),
                                "run as root, or in a delegated cgroup v2"))  # fmt: skip
    checks.append(Check("limit /tmp size", True, "tmpfs with a size (bwrap --size)"))
    return checks


def sandbox_checks() -> list[Check]:
    return [check_bwrap(), check_util_linux(), check_user_namespaces()]


def boxlite_checks() -> list[Check]:
    return [check_hardware_virtualization(), check_kvm(), check_boxlite()]
