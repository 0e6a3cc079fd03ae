"""The actions server under a flood: half-open connections are dropped and capped, requests in
flight are capped per token, and the host keeps serving boxes. Real sockets, a real flooding
process, a real box."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from agentlite.box.base import BoxSpec
from agentlite.box.sandbox import SandboxRuntime
from agentlite.platform.actions import (
    MAX_ACTIVE_PER_TOKEN,
    MAX_PENDING_CONNECTIONS,
    ActionContext,
    ActionRegistry,
    ActionsServer,
)

FLOOD = 2000

# Opens FLOOD connections, sends half a request line on each, holds them until stdin closes.
_FLOODER = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /call HTT")
    held.append(s)
print("flooding", len(held), flush=True)
sys.stdin.read()
"""

# Inside the box: one real /call to the actions server at the same URL as on the host.
_CALLER = """
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url + "/call", data=json.dumps({"name": "ping", "payload": None}).encode(),
                             headers={"Authorization": "Bearer " + token}, method="POST")
with urllib.request.urlopen(req, timeout=30) as reply:
    print(reply.status, reply.read().decode())
"""


@pytest.fixture
async def actions() -> AsyncIterator[tuple[ActionsServer, asyncio.Event]]:
    registry = ActionRegistry()
    release = asyncio.Event()

    def ping(ctx: ActionContext) -> dict[str, Any]:
        return {"pong": ctx.source_group}

    async def slow(ctx: ActionContext) -> str:
        await release.wait()
        return "done"

    registry.register("ping", ping)
    registry.register("slow", slow)
    server = ActionsServer(registry)
    await server.start()
    yield server, release
    release.set()
    await server.stop()


async def _post(url: str, token: str, name: str) -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = json.dumps({"name": name, "payload": None}).encode()
    writer.write(
        f"POST /call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    reply = await reader.read()
    writer.close()
    return int(reply.split(b" ", 2)[1])


async def test_half_open_flood_leaves_the_host_able_to_start_a_box_and_serve(
    sandbox: SandboxRuntime, actions: tuple[ActionsServer, asyncio.Event]
) -> None:
    server, _ = actions
    assert server.url is not None
    port = urlsplit(server.url).port
    assert port is not None
    me = psutil.Process()
    fds_before = me.num_fds()
    flooder = subprocess.Popen([sys.executable, "-c", _FLOODER, str(port), str(FLOOD)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Let the server take the flood while the flooder connects (its readline would block the loop).
        line = await asyncio.to_thread(flooder.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == f"flooding {FLOOD}", line
        # Poll: the server accepts the backlog at its own pace, evicting the oldest as it goes.
        bound = fds_before + MAX_PENDING_CONNECTIONS + 50
        deadline = time.monotonic() + 60
        while not (len(server._pending) == MAX_PENDING_CONNECTIONS and me.num_fds() < bound):
            assert time.monotonic() < deadline, f"the flood holds {me.num_fds() - fds_before} host fds"
            await asyncio.sleep(0.05)
        started = time.monotonic()
        auth = server.mint_token("main", True)
        box = "agentlite-t-actions-flood"
        await sandbox.create(box, BoxSpec(exposed_ports=[port]))
        try:
            proc = await sandbox.exec(box, [sys.executable, "-c", _CALLER, auth.url, auth.token])
            out = b"".join([line async for line in proc.stdout_lines()]).decode()
            err = b"".join([line async for line in proc.stderr_lines()]).decode()
            assert await proc.wait() == 0, err
        finally:
            await sandbox.remove(box, force=True)
        assert out.startswith("200 ") and json.loads(out[4:]) == {"result": {"pong": "main"}}, out
        assert me.num_fds() < bound
        print(f"box started and served during the flood in {time.monotonic() - started:.2f} s")
    finally:
        flooder.stdin.close()  # type: ignore[union-attr]
        flooder.wait(timeout=30)
        flooder.stdout.close()  # type: ignore[union-attr]


async def test_requests_in_flight_are_capped_per_token(actions: tuple[ActionsServer, asyncio.Event]) -> None:
    server, release = actions
    assert server.url is not None
    busy = server.mint_token("busy", False)
    other = server.mint_token("other", False)
    held = [asyncio.create_task(_post(server.url, busy.token, "slow")) for _ in range(MAX_ACTIVE_PER_TOKEN)]
    deadline = time.monotonic() + 30
    while sum(server._active.values()) < MAX_ACTIVE_PER_TOKEN:
        assert time.monotonic() < deadline, "the held requests never all became active"
        await asyncio.sleep(0.02)
    assert await _post(server.url, busy.token, "ping") == 429
    assert await _post(server.url, other.token, "ping") == 200  # another box is not starved
    release.set()
    assert await asyncio.gather(*held) == [200] * MAX_ACTIVE_PER_TOKEN


async def test_a_silent_connection_is_dropped(actions: tuple[ActionsServer, asyncio.Event],
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import agentlite.platform.actions as actions_module

    monkeypatch.setattr(actions_module, "REQUEST_READ_TIMEOUT", 0.5)
    server, _ = actions
    assert server.url is not None
    parts = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"POST /call HTTP/1.1\r\n")
    # The server closes it without a reply once the read timeout passes.
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
