"""Box network modes, tried for real: a server on the host's 127.0.0.1, boxes in every mode, the
egress proxy's three protocols, another box's sockets, and the proxy's refusal log."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentlite.box.base import BoxSpec
from agentlite.box.boxnet import PROXY_PORT
from agentlite.box.network import (
    AllowEntry,
    EgressPolicy,
    NetworkMode,
    Refused,
    host_addresses,
    loopback_ports,
    parse_network_mode,
    refusal_reason,
)
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import ConfigError
from conftest import needs_agent_clis
from net_box import host_http_server, run_probes


@pytest.fixture
def host_server() -> Iterator[int]:
    """A real HTTP server on the host's 127.0.0.1; yields its port."""
    with host_http_server(b"hello from the host") as port:
        yield port


def egress_log(home: Path, box: str) -> str:
    path = home / "sandbox" / box / "egress.log"
    return path.read_text() if path.exists() else ""


def everything_to(port: int) -> list[list[object]]:
    """Every way of reaching the host's loopback service at ``port``: by IP and by a name, directly
    and through each proxy protocol."""
    probes: list[list[object]] = []
    for host in ("127.0.0.1", "localhost"):
        probes.append(["direct", host, port])
        for kind in ("connect", "http", "socks"):
            probes.append([kind, PROXY_PORT, host, port])
    return probes


@pytest.mark.parametrize("mode", ["egress", "allowlist"])
async def test_host_loopback_is_unreachable_by_ip_and_by_name(
    sandbox: SandboxRuntime, home: Path, host_server: int, mode: str
) -> None:
    # The allowlist names the service's host without a port: address checks still apply.
    allow = ["localhost", "127.0.0.1"] if mode == "allowlist" else []
    box = f"agentlite-t-net-{mode}"
    await sandbox.create(box, BoxSpec(network_mode=mode, allow_net=allow))
    try:
        results = await run_probes(sandbox, box, everything_to(host_server))
        log = egress_log(home, box)
    finally:
        await sandbox.remove(box, force=True)
    assert not [k for k, v in results.items() if v.startswith("ok")], results
    for host in ("127.0.0.1", "localhost"):
        assert results[f"direct {host} {host_server}"].startswith("error"), results
        for kind in ("connect", "http", "socks"):
            assert results[f"{kind} {PROXY_PORT} {host} {host_server}"].startswith("refused"), results
    assert f"refused CONNECT 127.0.0.1:{host_server}: 127.0.0.1 is loopback" in log
    assert f"refused CONNECT localhost:{host_server}: localhost resolves to" in log


async def test_host_mode_shares_the_host_network(sandbox: SandboxRuntime, host_server: int) -> None:
    box = "agentlite-t-net-host"
    await sandbox.create(box, BoxSpec(network_mode="host"))
    try:
        results = await run_probes(
            sandbox, box, [["direct", "127.0.0.1", host_server], ["direct", "localhost", host_server]]
        )
    finally:
        await sandbox.remove(box, force=True)
    assert all(v.startswith("ok: HTTP/1.0 200") for v in results.values()), results


async def test_allowlist_reaches_a_listed_host_port_and_refuses_the_rest(
    sandbox: SandboxRuntime, home: Path, host_server: int
) -> None:
    box = "agentlite-t-net-allow"
    with host_http_server(b"hello from the host") as other_port:  # a second real service, not listed
        await sandbox.create(box, BoxSpec(network_mode="allowlist", allow_net=[f"127.0.0.1:{host_server}"]))
        try:
            listed = [[kind, PROXY_PORT, "127.0.0.1", host_server] for kind in ("connect", "http", "socks")]
            results = await run_probes(sandbox, box, [*listed, ["connect", PROXY_PORT, "127.0.0.1", other_port],
                                                      ["direct", "127.0.0.1", host_server]])  # fmt: skip
            log = egress_log(home, box)
        finally:
            await sandbox.remove(box, force=True)
    for kind in ("connect", "http", "socks"):
        assert results[f"{kind} {PROXY_PORT} 127.0.0.1 {host_server}"].startswith("ok: HTTP/1.0 200"), results
    assert results[f"connect {PROXY_PORT} 127.0.0.1 {other_port}"].startswith("refused"), results
    assert results[f"direct 127.0.0.1 {host_server}"].startswith("error"), results  # only via the proxy
    assert f"127.0.0.1:{other_port} is not in the allowlist" in log


async def test_egress_refuses_metadata_private_and_own_addresses(sandbox: SandboxRuntime, home: Path) -> None:
    own = next((str(ip) for ip in host_addresses() if ip.version == 4 and not ip.is_loopback), None)
    targets = ["169.254.169.254", "10.1.2.3", "192.168.0.1", "100.64.0.1", "0.0.0.0", "[::1]"]
    targets += [own] if own else []
    box = "agentlite-t-net-private"
    await sandbox.create(box, BoxSpec())  # egress is the default
    try:
        direct = [["direct", t, 80] for t in ("169.254.169.254", *([own] if own else []))]
        results = await run_probes(
            sandbox, box, [*([["connect", PROXY_PORT, t, 80] for t in targets]), *direct]
        )
        log = egress_log(home, box)
    finally:
        await sandbox.remove(box, force=True)
    via_proxy = {k: v for k, v in results.items() if k.startswith("connect")}
    assert all(v.startswith("refused: HTTP/1.1 403") for v in via_proxy.values()), results
    # Without the proxy there is no route at all out of the box's own namespace.
    assert all(v.startswith("error") for k, v in results.items() if k.startswith("direct")), results
    assert "169.254.169.254 is link-local" in log
    if own:
        assert f"refused CONNECT {own}:80" in log


async def test_none_mode_has_no_proxy_but_keeps_exposed_endpoints(
    sandbox: SandboxRuntime, host_server: int
) -> None:
    box = "agentlite-t-net-none"
    await sandbox.create(box, BoxSpec(network_mode="none", exposed_ports=[host_server]))
    try:
        results = await run_probes(sandbox, box, [["direct", "127.0.0.1", host_server], ["direct", "localhost", host_server],
                                                  ["connect", PROXY_PORT, "127.0.0.1", host_server]])  # fmt: skip
        env_proc = await sandbox.exec(box, ["env"])
        env = b"".join([line async for line in env_proc.stdout_lines()]).decode()
        await env_proc.wait()
    finally:
        await sandbox.remove(box, force=True)
    # The exposed endpoint answers at the same port inside; nothing else does.
    assert results[f"direct 127.0.0.1 {host_server}"].startswith("ok: HTTP/1.0 200"), results
    assert results[f"direct localhost {host_server}"].startswith("ok: HTTP/1.0 200"), results
    assert results[f"connect {PROXY_PORT} 127.0.0.1 {host_server}"].startswith("error"), results
    assert "PROXY" not in env.upper()


async def test_a_box_cannot_reach_another_boxs_sockets_nor_listen_on_the_host(
    sandbox: SandboxRuntime,
) -> None:
    import socket

    with socket.socket() as free:  # a port nothing on the host listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = (
        "import socket, sys, threading\n"
        "def serve(s):\n"
        "    while True:\n"
        "        c, _ = s.accept(); c.recv(100); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n'); c.close()\n"
        "tcp = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
        "unix = socket.socket(socket.AF_UNIX); unix.bind('\\0agentlite-test-box-b'); unix.listen()\n"
        "for s in (tcp, unix): threading.Thread(target=serve, args=(s,), daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "threading.Event().wait()\n"
    )
    await sandbox.create("agentlite-t-net-b", BoxSpec())
    await sandbox.create("agentlite-t-net-a", BoxSpec())
    try:
        serving = await sandbox.exec("agentlite-t-net-b", [sys.executable, "-c", server, str(port)])
        lines = serving.stdout_lines()
        assert (await asyncio.wait_for(anext(lines), 30)).strip() == b"ready"
        targets: list[list[object]] = [["direct", "127.0.0.1", port], ["abstract", "agentlite-test-box-b", 0]]
        inside_b = await run_probes(sandbox, "agentlite-t-net-b", targets)
        from_a = await run_probes(sandbox, "agentlite-t-net-a", targets)
        # Box B listens on its own 0.0.0.0, which is not the host's.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        await serving.kill()
    finally:
        await sandbox.remove("agentlite-t-net-a", force=True)
        await sandbox.remove("agentlite-t-net-b", force=True)
    assert all(v.startswith("ok") for v in inside_b.values()), inside_b  # the server really serves
    assert all(v.startswith("error") for v in from_a.values()), from_a


async def test_the_helper_dies_with_its_box(sandbox: SandboxRuntime, home: Path) -> None:
    box = "agentlite-t-net-helper"
    await sandbox.create(box, BoxSpec())
    state = json.loads((home / "sandbox" / box / "box.json").read_text())
    helper = psutil.Process(state["egress_pid"])
    assert "agentlite.box.egress" in " ".join(helper.cmdline())
    assert state["network_mode"] == "egress"
    await sandbox.remove(box, force=True)
    assert not psutil.pid_exists(helper.pid) or helper.status() == psutil.STATUS_ZOMBIE


# -- policy units -------------------------------------------------------------------------------


def test_allow_entries_parse_and_match() -> None:
    assert AllowEntry.parse("*.Example.com").matches("api.example.com", 443)
    assert not AllowEntry.parse("*.example.com").matches("example.com", 443)
    assert not AllowEntry.parse("*.example.com").matches("badexample.com", 443)
    assert AllowEntry.parse("example.com:443").matches("example.com", 443)
    assert not AllowEntry.parse("example.com:443").matches("example.com", 80)
    assert AllowEntry.parse("[::1]:8080") == AllowEntry("::1", 8080)
    for bad in ("exa mple.com", "example.com:0", "example.com:http", "[::1", "*.", "a..b"):
        with pytest.raises(ConfigError, match="allowlist entry"):
            AllowEntry.parse(bad)


def test_refusal_reasons_cover_the_non_public_ranges() -> None:
    import ipaddress

    for text, why in (
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.0.0.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "public"),
    ):
        reason = refusal_reason(ipaddress.ip_address(text), frozenset())
        assert reason is not None and why in reason, (text, reason)
    assert refusal_reason(ipaddress.ip_address("93.184.216.34"), frozenset()) is None
    mine = ipaddress.ip_address("93.184.216.34")
    assert refusal_reason(mine, frozenset({mine})) == "an address of this host"


def test_policy_checks_every_resolved_address() -> None:
    import ipaddress

    policy = EgressPolicy(NetworkMode.EGRESS)
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")
    policy.check("example.com", 443, [public])
    with pytest.raises(Refused, match=r"resolves to 10\.0\.0\.7"):
        policy.check("rebind.example", 443, [public, private])
    listed = EgressPolicy(NetworkMode.ALLOWLIST, (AllowEntry.parse("db.internal:5432"),))
    listed.check("db.internal", 5432, [private])  # an explicit host:port may be private
    with pytest.raises(Refused, match="not in the allowlist"):
        listed.check("db.internal", 5433, [private])


def test_bad_network_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="network mode `bridge` is not one of"):
        parse_network_mode("bridge")
    with pytest.raises(ConfigError, match="need network mode `allowlist`"):
        BoxSpec(allow_net=["example.com"])
    with pytest.raises(ConfigError, match="exposed port"):
        BoxSpec(exposed_ports=[70000])
    assert BoxSpec(network=False).net_mode is NetworkMode.NONE
    assert BoxSpec().net_mode is NetworkMode.EGRESS


def test_a_remote_model_endpoint_is_allowed_in_allowlist_mode() -> None:
    from agentlite.box.network import model_endpoint_entries

    assert model_endpoint_entries("https://llm.internal.example/v1") == ["llm.internal.example:443"]
    assert model_endpoint_entries("http://10.0.0.5:8080") == ["10.0.0.5:8080"]
    assert model_endpoint_entries("http://127.0.0.1:8080/v1") == []  # bridged in instead
    assert model_endpoint_entries(None) == []


def test_loopback_ports_of_urls() -> None:
    urls = [
        "http://127.0.0.1:8123/v1",
        "http://localhost:9000",
        "https://api.openai.com/v1",
        None,
        "http://[::1]:5",
    ]
    assert loopback_ports(urls) == [8123, 9000]


# -- real agent turns through the bridges ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("codex", marks=needs_agent_clis("codex")),
        pytest.param("claude_code", marks=needs_agent_clis("claude")),
    ],
)
async def test_a_full_agent_turn_in_egress_mode_gives_one_final(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, kind: str
) -> None:
    from agentlite.run.box_run import run_agent
    from agentlite.run.protocol import BackendConfig, ResultEvent, RunnerInput, StateEvent
    from agentlite.testing import ModelServer

    events: list[object] = []
    async with ModelServer(scenario="text") as model:
        base = model.anthropic_base_url if kind == "claude_code" else model.openai_base_url
        config = BackendConfig(type=kind, base_url=base, model="fake-model", max_retries=0)  # type: ignore[arg-type]
        run_input = RunnerInput(
            prompt="hello", group_folder="main", chat_id="c1", is_main=True, backend=config
        )
        outcome = await run_agent(sandbox, home, run_input, workspace=tmp_path / "ws", on_event=events.append,
                                  single_turn=True, timeout=120, idle_timeout=5,
                                  spec=BoxSpec(network_mode="egress"))  # fmt: skip
    finals = [e for e in events if isinstance(e, ResultEvent)]
    assert outcome.status == "success", outcome.error
    assert len(finals) == 1 and finals[0].result == outcome.result
    assert sum(isinstance(e, StateEvent) and e.state == "stopped" for e in events) == 1
    assert outcome.log_path is not None
    assert json.loads(outcome.log_path.read_text().split("\n\n=== stdout", 1)[0])["network"] == "egress"


async def test_the_proxy_relays_bytes_intact_and_passes_half_closes_on(sandbox: SandboxRuntime) -> None:
    import socket

    def echo_until_eof(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # only after the box's half-close arrived

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=echo_until_eof, args=(listener,), daemon=True).start()
    client = (
        "import hashlib, os, socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s.sendall(f'CONNECT 127.0.0.1:{sys.argv[2]} HTTP/1.1\\r\\n\\r\\n'.encode())\n"
        "head = b''\n"
        "while not head.endswith(b'\\r\\n\\r\\n'): head += s.recv(1)\n"
        "payload = os.urandom(8 << 20)\n"
        "s.sendall(payload); s.shutdown(socket.SHUT_WR)\n"
        "got = bytearray()\n"
        "while chunk := s.recv(1 << 16): got += chunk\n"
        "print(hashlib.sha256(payload).hexdigest() == hashlib.sha256(got).hexdigest(), len(got))\n"
    )
    box = "agentlite-t-net-relay"
    try:
        await sandbox.create(box, BoxSpec(network_mode="allowlist", allow_net=[f"127.0.0.1:{port}"]))
        try:
            proc = await sandbox.exec(box, [sys.executable, "-c", client, str(PROXY_PORT), str(port)])
            out = b"".join([line async for line in proc.stdout_lines()]).decode()
            err = b"".join([line async for line in proc.stderr_lines()]).decode()
            assert await proc.wait() == 0, err
        finally:
            await sandbox.remove(box, force=True)
    finally:
        listener.close()
    assert out.split() == ["True", str(8 << 20)], out
