"""The per-box host-side network helper: the egress proxy and the exposed-endpoint forwarders.

Run as ``python -m agentlite.box.egress CONFIG_JSON``, detached, one per box, by the sandbox runtime
(:mod:`agentlite.box.boxnet`), which binds the listening Unix sockets itself and passes them as
inherited fds, so a box's start never waits for this process's Python start-up: connections simply
queue in the sockets' backlog until it accepts them. Inside the box, ``socat`` bridges
``127.0.0.1:<port>`` to those sockets.

* The proxy socket speaks HTTP ``CONNECT``, plain absolute-URI HTTP (``GET http://host/...``) and
  SOCKS5 ``CONNECT`` (no auth; told apart by the first byte). Every destination goes through
  :class:`agentlite.box.network.EgressPolicy`: names are resolved here on the host, every resolved
  address is checked, and the connection is made to the checked address, so a name cannot resolve
  to something else between check and connect. Every refusal is logged with its reason to the box's
  ``egress.log`` (capped: it starts over past 1 MiB). Started as root, it runs as the box user
  once that log is open: what a box sends is never parsed with the host's privileges.
* Each forward socket connects to one port on the host's 127.0.0.1 with no policy: the operator
  (or the run) exposed exactly that endpoint.

Why our own proxy rather than one from PyPI (``proxy.py``, ``pproxy``): none listens on an inherited
Unix socket, applies a per-box allowlist, and checks the resolved addresses before connecting to
exactly those; bending either to that would be more code than this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from agentlite.box.network import (
    EgressPolicy,
    IpAddress,
    Refused,
    host_addresses,
    normalize_host,
    parse_allow_net,
    parse_network_mode,
)
from agentlite.core.errors import AgentliteError

log = logging.getLogger("agentlite.egress")

HEADER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
MAX_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS = 512
LOG_CAP = 1024 * 1024

_SOCKS_OK, _SOCKS_REFUSED, _SOCKS_UNREACHABLE, _SOCKS_BAD_COMMAND, _SOCKS_BAD_ADDRESS = 0, 2, 4, 7, 8


class _ClientError(AgentliteError):
    """The client sent something this proxy will not serve; the message goes back to it."""


class _Client:
    """The box's side of one connection while its request is read: a non-blocking socket with a
    small read buffer (what a stream reader would do, but the socket stays ours to relay later)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self._loop = asyncio.get_running_loop()

    async def _fill(self) -> None:
        data = await self._loop.sock_recv(self.sock, 65536)
        if not data:
            raise asyncio.IncompleteReadError(bytes(self.buffer), None)
        self.buffer += data

    async def readexactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def readuntil(self, separator: bytes, limit: int) -> bytes:
        while (end := self.buffer.find(separator)) < 0:
            if len(self.buffer) > limit:
                raise _ClientError("request header too large")
            await self._fill()
        end += len(separator)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def send(self, data: bytes) -> None:
        await self._loop.sock_sendall(self.sock, data)


class _RelaySide(asyncio.Protocol):
    """One side of a relayed connection: what it receives goes straight to the other side's
    transport (no task, no stream buffer in between); flow control pauses the sender's reads."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.peer: _RelaySide | None = None
        self.got_eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()  # until both sides exist and the first bytes are written

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        assert self.peer is not None
        peer = self.peer.transport
        if self.peer.got_eof or peer is None or not peer.can_write_eof():
            return False  # both directions ended: close
        peer.write_eof()  # pass the half-close on, keep reading the other way
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.close()  # flushes what is buffered first
        elif not self.done.done():
            self.done.set_result(None)


async def relay(client: _Client, upstream: socket.socket, first_upstream_bytes: bytes = b"") -> None:
    """Copy both ways between the box's socket and ``upstream`` until both have closed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    box_side, far_side = _RelaySide(done), _RelaySide(done)
    box_side.peer, far_side.peer = far_side, box_side
    await loop.create_connection(lambda: far_side, sock=upstream)
    leftover = bytes(client.buffer)  # what the box sent after its request head
    client.buffer.clear()
    await loop.connect_accepted_socket(lambda: box_side, client.sock)
    assert far_side.transport is not None and box_side.transport is not None
    if first_upstream_bytes or leftover:
        far_side.transport.write(first_upstream_bytes + leftover)
    far_side.transport.resume_reading()
    box_side.transport.resume_reading()
    try:
        await done
    finally:
        box_side.transport.close()
        far_side.transport.close()


async def connect_to(ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


Handler = Callable[[_Client], Awaitable[None]]


class EgressProxy:
    """Serves one box: the policy-checked proxy and the plain forwards."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._tasks: set[asyncio.Task[None]] = set()

    # -- accepting, with a cap -----------------------------------------------------------------

    async def _accept(self, listener: socket.socket, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            sock, _ = await loop.sock_accept(listener)
            if len(self._tasks) >= MAX_CONNECTIONS:
                log.warning("refused a connection: %d connections already open", len(self._tasks))
                sock.close()
                continue
            sock.setblocking(False)
            task = asyncio.create_task(self._serve_one(handler, sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve_one(self, handler: Handler, sock: socket.socket) -> None:
        try:
            await handler(_Client(sock))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except Exception:
            log.exception("proxy connection failed")
        finally:
            sock.close()

    async def serve(
        self, proxy_sock: socket.socket | None, forwards: list[tuple[socket.socket, int]]
    ) -> None:
        loops = [self._accept(sock, _forwarder(port)) for sock, port in forwards]
        if proxy_sock is not None:
            loops.append(self._accept(proxy_sock, self.handle_proxy))
        await asyncio.gather(*loops)

    # -- the proxy -----------------------------------------------------------------------------

    async def handle_proxy(self, client: _Client) -> None:
        first = await asyncio.wait_for(client.readexactly(1), HEADER_TIMEOUT)
        if first == b"\x05":
            await self._socks5(client)
        else:
            await self._http(first, client)

    async def open_checked(self, host: str, port: int, how: str) -> socket.socket:
        """Resolve ``host``, check every address, connect to a checked one; raise Refused."""
        host = normalize_host(host)
        try:
            addresses = await self._resolve(host, port)
            self.policy.check(host, port, addresses)
        except Refused as exc:
            log.warning("refused %s %s:%d: %s", how, host, port, exc)
            raise
        last: Exception | None = None
        for ip in addresses:
            try:
                return await connect_to(str(ip), port)
            except (OSError, TimeoutError) as exc:
                last = exc
        log.info("could not connect %s %s:%d: %s", how, host, port, last)
        raise ConnectionRefusedError(f"could not connect to {host}:{port}: {last}")

    async def _resolve(self, host: str, port: int) -> list[IpAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if not host or len(host) > 253:
            raise Refused(f"`{host}` is not a host name")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Refused(f"{host} does not resolve: {exc.strerror}") from None
        seen: list[IpAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in seen:
                seen.append(ip)
        return seen

    async def _http(self, first: bytes, client: _Client) -> None:
        try:
            head = first + await asyncio.wait_for(
                client.readuntil(b"\r\n\r\n", MAX_HEADER_BYTES), HEADER_TIMEOUT
            )
        except _ClientError as exc:
            await _http_reply(client, 431, str(exc))
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _http_reply(client, 400, "malformed request line")
            return
        method, target, version = parts
        try:
            if method == "CONNECT":
                host, port = _split_host_port(target, default_port=None)
                upstream = await self.open_checked(host, port, "CONNECT")
                try:
                    await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                except BaseException:
                    upstream.close()
                    raise
                await relay(client, upstream)
                return
            if not target.lower().startswith("http://"):
                raise _ClientError("this proxy forwards http:// URLs and CONNECT (use CONNECT for https)")
            rest = target[len("http://") :]
            authority, slash, path = rest.partition("/")
            host, port = _split_host_port(authority.rpartition("@")[2], default_port=80)
            upstream = await self.open_checked(host, port, method)
        except _ClientError as exc:
            await _http_reply(client, 400, str(exc))
            return
        except Refused as exc:
            await _http_reply(client, 403, f"refused by the box's network policy: {exc}")
            return
        except (ConnectionError, OSError, TimeoutError) as exc:
            await _http_reply(client, 502, str(exc) or type(exc).__name__)
            return
        # One request per connection: a keep-alive client's next request may name another host, and
        # it must get its own policy check, so the upstream is told to close after answering.
        headers = [line for line in lines[1:] if line and not _is_hop_header(line)]
        if not any(line.lower().startswith("host:") for line in headers):
            headers.insert(0, f"Host: {authority}")
        request = f"{method} /{path if slash else ''} {version}\r\n" + "".join(f"{h}\r\n" for h in headers)
        await relay(client, upstream, (request + "Connection: close\r\n\r\n").encode("latin-1"))

    async def _socks5(self, client: _Client) -> None:
        async def read(n: int) -> bytes:
            return await asyncio.wait_for(client.readexactly(n), HEADER_TIMEOUT)

        methods = await read((await read(1))[0])
        if 0 not in methods:
            await client.send(b"\x05\xff")
            return
        await client.send(b"\x05\x00")
        version, command, _reserved, kind = await read(4)
        if version != 5:
            return
        if kind == 1:
            host = str(ipaddress.IPv4Address(await read(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await read(16)))
        elif kind == 3:
            host = (await read((await read(1))[0])).decode("ascii", "replace")
        else:
            await client.send(_socks_reply(_SOCKS_BAD_ADDRESS))
            return
        (port,) = struct.unpack("!H", await read(2))
        if command != 1:
            await client.send(_socks_reply(_SOCKS_BAD_COMMAND))
            return
        try:
            upstream = await self.open_checked(host, port, "SOCKS5")
        except Refused:
            await client.send(_socks_reply(_SOCKS_REFUSED))
            return
        except (ConnectionError, OSError, TimeoutError):
            await client.send(_socks_reply(_SOCKS_UNREACHABLE))
            return
        try:
            await client.send(_socks_reply(_SOCKS_OK))
        except BaseException:
            upstream.close()
            raise
        await relay(client, upstream)


def _socks_reply(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])


def _is_hop_header(line: str) -> bool:
    name = line.partition(":")[0].strip().lower()
    return name in ("connection", "proxy-connection", "keep-alive", "proxy-authorization")


def _split_host_port(authority: str, *, default_port: int | None) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        host, port_text = authority.split(":")
    else:
        host, port_text = authority, ""
    if not port_text:
        if default_port is None:
            raise _ClientError(f"`{authority}` needs a port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _ClientError(f"`{authority}` has a bad port")
    return host, int(port_text)


async def _http_reply(client: _Client, status: int, text: str) -> None:
    reasons = {
        400: "Bad Request",
        403: "Forbidden",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
    }
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError, OSError):
        await client.send(head.encode() + body)


def _forwarder(port: int) -> Handler:
    async def forward(client: _Client) -> None:
        try:
            upstream = await connect_to("127.0.0.1", port)
        except (OSError, TimeoutError) as exc:
            log.info("exposed port %d is not answering: %s", port, exc)
            return
        await relay(client, upstream)

    return forward


class _CappedLog(logging.StreamHandler):  # type: ignore[type-arg]
    """The log on a descriptor opened before the helper drops root: when it passes ``cap`` it
    starts over (it cannot rotate: the box's folder is not the box user's to rename in)."""

    def __init__(self, path: str, cap: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        super().__init__(os.fdopen(fd, "a", encoding="utf-8", errors="replace"))
        self.cap = cap

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        with contextlib.suppress(OSError):
            if os.fstat(self.stream.fileno()).st_size > self.cap:
                os.ftruncate(self.stream.fileno(), 0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()
        super().close()


def _setup_log(path: str) -> None:
    handler = _CappedLog(path, LOG_CAP)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _drop_root(run_as: list[int] | None) -> None:
    if run_as is None:
        return
    uid, gid = int(run_as[0]), int(run_as[1])
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[0])
    _setup_log(config["log"])
    _drop_root(config.get("run_as"))
    mode = parse_network_mode(config["mode"])
    policy = EgressPolicy(mode, parse_allow_net(config.get("allow", [])), host_addresses())
    proxy_fd = config.get("proxy_fd")
    proxy_sock = None if proxy_fd is None else socket.socket(fileno=int(proxy_fd))
    forwards = [(socket.socket(fileno=int(fd)), int(port)) for fd, port in config.get("forwards", [])]
    log.info("serving mode=%s allow=%s forwards=%s", mode, [str(e) for e in policy.allow],
             [p for _, p in forwards])  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(EgressProxy(policy).serve(proxy_sock, forwards))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
