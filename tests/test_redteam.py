"""Attacks from inside a real box that the per-module tests do not try, each tried for real: odd
spellings of the host's loopback through every proxy protocol, 6to4 wrapping, a wildcard allowlist
entry with a port, group folders that collide with the host's own IPC folders, and writing into an
``exec``'s memory before its syscall filter is in."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentlite._names import InvalidName, check_group_folder
from agentlite._network import AllowEntry, EgressPolicy, NetworkMode, Refused, refusal_reason
from agentlite.runtime.base import BoxSpec
from agentlite.runtime.boxnet import PROXY_PORT
from agentlite.runtime.sandbox import SandboxRuntime
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


async def test_a_box_cannot_write_into_an_exec_before_its_syscall_filter_is_in(
    sandbox: SandboxRuntime,
) -> None:
    box = "agentlite-t-redteam-loader"
    await sandbox.create(box, BoxSpec(network_mode="none"))
    try:
        watcher = await sandbox.exec(box, [sys.executable, "-S", "-c", LOADER_WATCHER])
        output = asyncio.ensure_future(_read_all(watcher.stdout_lines()))
        for _ in range(300):  # until the watcher has seen enough loaders (bounded)
            if output.done():
                break
            started = await sandbox.exec(box, ["true"])
            assert await started.wait() == 0
        report = json.loads(await output)
        assert await watcher.wait() == 0
    finally:
        await sandbox.remove(box, force=True)
    assert report["sightings"] >= 1, report  # the watcher did see loaders: the attack was tried
    assert report["opened"] == [], report


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

    from agentlite._egress import _CappedLog

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
    from agentlite.runtime.base import Volume

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
