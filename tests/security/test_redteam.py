"""Attacks from inside a real box that the per-module tests do not try, each tried for real: odd
spellings of the host's loopback through every proxy protocol, 6to4 wrapping, a wildcard allowlist
entry with a port, group folders that collide with the host's own IPC folders, and writing into an
``exec``'s memory before its syscall filter is in."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import pwd
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentlite.box.base import BoxSpec
from agentlite.box.box_user import BOX_USER
from agentlite.box.boxnet import PROXY_PORT
from agentlite.box.network import AllowEntry, EgressPolicy, NetworkMode, Refused, refusal_reason
from agentlite.box.probe import sandbox_checks
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.agent_clis import agent_clis_prefix
from agentlite.core.names import InvalidName, check_group_folder
from agentlite.image.builder import build_image, image_rootfs_for_sandbox
from net_box import host_http_server, run_probes

#: Spellings that name the host's loopback (or all its addresses) without writing `127.0.0.1`.
LOOPBACK_SPELLINGS = [
    "2130706433",  # decimal
    "0x7f.1",  # hex and short form
    "0177.0.0.1",  # octal
    "127.1",
    "0",
    "0.0.0.0",
    "localhost.",  # trailing dot
    "LOCALHOST",
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[::1%lo]",  # a zone id
]


@pytest.fixture
def host_server() -> Iterator[int]:
    with host_http_server(b"host secret") as port:
        yield port


async def test_odd_spellings_of_the_host_loopback_are_refused_by_every_proxy_protocol(
    sandbox: SandboxRuntime, home: Path, host_server: int
) -> None:
    probes: list[list[object]] = []
    for host in LOOPBACK_SPELLINGS:
        probes.append(["connect", PROXY_PORT, host, host_server])
        probes.append(["http", PROXY_PORT, host, host_server])
        if not host.startswith("["):  # SOCKS5 takes names without brackets
            probes.append(["socks", PROXY_PORT, host, host_server])
    probes.append(["http", PROXY_PORT, "example.com@127.0.0.1", host_server])  # userinfo trick
    box = "agentlite-t-redteam-spellings"
    await sandbox.create(box, BoxSpec(network_mode="egress"))
    try:
        results = await run_probes(sandbox, box, probes)
        log = (home / "sandbox" / box / "egress.log").read_text()
    finally:
        await sandbox.remove(box, force=True)
    reached = {k: v for k, v in results.items() if "host secret" in v or v.startswith("ok: HTTP/1.0 200")}
    assert not reached, reached
    assert f"refused CONNECT 2002:7f00:1:::{host_server}: 2002:7f00:1:: is 6to4 for 127.0.0.1" in log


def test_6to4_addresses_are_judged_by_the_ipv4_address_they_carry() -> None:
    six_to_four_loopback = ipaddress.ip_address("2002:7f00:1::")
    reason = refusal_reason(six_to_four_loopback, frozenset())
    assert reason is not None and "loopback" in reason
    private = refusal_reason(ipaddress.ip_address("2002:c0a8:101::"), frozenset())  # 192.168.1.1
    assert private is not None and "private" in private
    assert refusal_reason(ipaddress.ip_address("2002:5db8:d822::"), frozenset()) is None  # public v4


def test_a_wildcard_entry_with_a_port_still_gets_the_address_checks() -> None:
    loopback = [ipaddress.ip_address("127.0.0.1")]
    policy = EgressPolicy(NetworkMode.ALLOWLIST, (AllowEntry.parse("*.example.com:443"),))
    # Anyone who controls a name below the wildcard can point it at the host's loopback.
    with pytest.raises(Refused, match="loopback"):
        policy.check("evil.example.com", 443, loopback)
    policy.check("api.example.com", 443, [ipaddress.ip_address("93.184.216.34")])
    # An exact host:port is still the operator naming one local service on purpose.
    EgressPolicy(NetworkMode.ALLOWLIST, (AllowEntry.parse("db.internal:5432"),)).check(
        "db.internal", 5432, loopback
    )


@pytest.mark.parametrize("folder", ["errors", "input", "Errors", "global"])
def test_group_folders_that_are_host_ipc_folders_are_refused(folder: str) -> None:
    # ipc/<group> is the group's box-writable IPC folder; ipc/errors holds other groups'
    # quarantined requests, so a group named `errors` would read them.
    with pytest.raises(InvalidName, match="reserved"):
        check_group_folder(folder)


#: Runs in a box: watches for processes started by later ``exec`` calls while they are still the
#: filter loader, and tries to open each one's memory for writing (which would let the box write code
#: into a process that has no syscall filter yet). Prints one JSON object and exits after enough
#: sightings or at its deadline.
LOADER_WATCHER = r"""
import json, os, sys, time
seen, sightings, opened = set(os.listdir("/proc")), 0, []
deadline = time.monotonic() + 90
while time.monotonic() < deadline and sightings < 5:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid in seen:
            continue
        try:
            if b"import ctypes" not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
        except OSError:
            continue
        seen.add(pid)
        sightings += 1
        try:
            os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))
            status = open(f"/proc/{pid}/status").read()
            opened.append([pid, [l for l in status.splitlines() if l.startswith("Seccomp:")]])
        except OSError:
            pass
print(json.dumps({"sightings": sightings, "opened": opened}), flush=True)
"""


async def _read_all(lines: AsyncIterator[bytes]) -> bytes:
    return b"".join([line async for line in lines])


async def _try_writing_into_loaders(runtime: SandboxRuntime, box: str) -> dict[str, object]:
    await runtime.create(box, BoxSpec(network_mode="none"))
    try:
        watcher = await runtime.exec(box, [sys.executable, "-S", "-c", LOADER_WATCHER])
        output = asyncio.ensure_future(_read_all(watcher.stdout_lines()))
        for _ in range(300):  # until the watcher has seen enough loaders (bounded)
            if output.done():
                break
            started = await runtime.exec(box, ["true"])
            assert await started.wait() == 0
        report = json.loads(await output)
        assert await watcher.wait() == 0
    finally:
        await runtime.remove(box, force=True)
    return report


async def test_a_box_cannot_write_into_an_exec_before_its_syscall_filter_is_in(
    sandbox: SandboxRuntime,
) -> None:
    report = await _try_writing_into_loaders(sandbox, "agentlite-t-redteam-loader")
    assert report["sightings"], report  # the watcher did see loaders: the attack was tried
    assert report["opened"] == [], report


IMAGE_HOME = Path(os.environ.get("AGENTLITE_TEST_IMAGE_HOME", "/var/tmp/agentlite-test-image"))


@pytest.fixture(scope="module")
def image_rootfs() -> Path:
    why_not = [c.detail for c in sandbox_checks() if not c.ok]
    if shutil.which("mmdebstrap") is None:
        why_not.append("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
    if agent_clis_prefix() is None:
        why_not.append("the agent CLIs are not installed (scripts/install.sh)")
    if os.geteuid() != 0:
        why_not.append("building the image needs root here (mmdebstrap unshare mode needs subuid ranges)")
    if why_not:
        pytest.skip("no guest image can be built: " + "; ".join(why_not))
    build_image(IMAGE_HOME)  # from the cache when it is warm
    return image_rootfs_for_sandbox(IMAGE_HOME)


@pytest.mark.timeout(900)
async def test_an_image_box_cannot_write_into_an_exec_before_its_syscall_filter_is_in(
    home: Path, image_rootfs: Path
) -> None:
    # An image box's uid is not its namespace's root: the loader must hold what the box's processes
    # lack until its filter is in, as in a root box.
    runtime = SandboxRuntime(home, rootfs=image_rootfs)
    report = await _try_writing_into_loaders(runtime, "agentlite-t-redteam-image-loader")
    assert report["sightings"], report
    assert report["opened"] == [], report


async def _host_status_of_descendant(pid: int, comm: str) -> dict[str, str]:
    """The host's view (``/proc/PID/status``) of the first descendant of ``pid`` named ``comm``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        todo = [pid]
        while todo:
            current = todo.pop()
            try:
                children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
                if current != pid and Path(f"/proc/{current}/comm").read_text().strip() == comm:
                    lines = Path(f"/proc/{current}/status").read_text().splitlines()
                    return dict(line.split(":", 1) for line in lines if ":" in line)
            except OSError:
                continue
            todo += [int(child) for child in children]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no `{comm}` under pid {pid}")


async def test_an_image_box_command_runs_as_the_box_user_with_nothing_more(
    home: Path, image_rootfs: Path
) -> None:
    runtime = SandboxRuntime(home, rootfs=image_rootfs)
    box = "agentlite-t-redteam-image-creds"
    await runtime.create(box, BoxSpec(network_mode="none"))
    try:
        # A dynamic loader variable still reaches the command (set after the filter, not before).
        shown = await runtime.exec(
            box, ["sh", "-c", "echo $LD_LIBRARY_PATH"], env={"LD_LIBRARY_PATH": "/nowhere"}
        )
        assert b"".join([line async for line in shown.stdout_lines()]) == b"/nowhere\n"
        assert await shown.wait() == 0
        proc = await runtime.exec(box, ["sleep", "60"])
        status = {
            key: value.strip() for key, value in (await _host_status_of_descendant(proc.pid, "sleep")).items()
        }
    finally:
        await runtime.remove(box, force=True)
    box_user = pwd.getpwnam(BOX_USER)
    assert status["Uid"].split() == [str(box_user.pw_uid)] * 4, status  # read from the host
    assert status["Gid"].split() == [str(box_user.pw_gid)] * 4, status
    assert status["Groups"] == "", status
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status)
    assert status["NoNewPrivs"] == "1", status
    assert status["Seccomp"] == "2", status


async def test_the_egress_helper_parses_box_requests_without_host_root(
    sandbox: SandboxRuntime, home: Path
) -> None:
    import os

    box = "agentlite-t-redteam-helper-uid"
    await sandbox.create(box, BoxSpec(network_mode="egress"))
    try:
        # The helper answers only once it has dropped root, so after one answer its uid is final.
        results = await run_probes(sandbox, box, [["connect", PROXY_PORT, "127.0.0.1", 9]])
        state = json.loads((home / "sandbox" / box / "box.json").read_text())
        status = Path(f"/proc/{state['egress_pid']}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        log = (home / "sandbox" / box / "egress.log").read_text()
    finally:
        await sandbox.remove(box, force=True)
    if os.geteuid() == 0:
        assert "0" not in uids, status  # real, effective, saved and filesystem uid all dropped
    assert results[f"connect {PROXY_PORT} 127.0.0.1 9"].startswith("refused"), results
    assert "refused CONNECT 127.0.0.1:9: 127.0.0.1 is loopback" in log  # still logs after dropping


def test_the_egress_log_starts_over_past_its_cap(tmp_path: Path) -> None:
    import logging

    from agentlite.box.egress import _CappedLog

    handler = _CappedLog(str(tmp_path / "egress.log"), cap=1000)
    logger = logging.getLogger("agentlite.test.capped")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(500):  # a box flooding refusals
            logger.warning("refused CONNECT flood-%d.example:443: not in the allowlist", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    size = (tmp_path / "egress.log").stat().st_size
    assert 0 < size <= 1000 + 200, size


async def test_a_box_cannot_hardlink_a_host_file_into_a_folder_it_writes(
    sandbox: SandboxRuntime, tmp_path: Path
) -> None:
    from agentlite.box.base import Volume

    # Both folders on the same host filesystem: only the mount boundary (and the box user not owning
    # the file) keeps the host's file out of the folder the host later reads as the box's.
    secret = tmp_path / "host-only" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("host secret")
    writable = tmp_path / "group"
    writable.mkdir()
    box = "agentlite-t-redteam-hardlink"
    spec = BoxSpec(
        network_mode="none",
        volumes=[
            Volume(secret.parent, "/workspace/ro", read_only=True),
            Volume(writable, "/workspace/group"),
        ],
    )
    await sandbox.create(box, spec)
    try:
        proc = await sandbox.exec(
            box, ["sh", "-c", "ln /workspace/ro/secret.txt /workspace/group/CLAUDE.md; echo rc=$?"]
        )
        out = await _read_all(proc.stdout_lines())
        await proc.wait()
    finally:
        await sandbox.remove(box, force=True)
    assert b"rc=1" in out, out
    assert not (writable / "CLAUDE.md").exists()
    assert secret.stat().st_nlink == 1
