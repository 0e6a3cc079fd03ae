"""The per-box host-side network helper: the egress proxy and the exposed-endpoint forwarders.

Run as ``python -m agentlite._egress CONFIG_JSON``, detached, one per box, by the sandbox runtime
(:mod:`agentlite.runtime.boxnet`), which binds the listening Unix sockets itself and passes them as
inherited fds, so a box's start never waits for this process's Python start-up: connections simply
queue in the sockets' backlog until it accepts them. Inside the box, ``socat`` bridges
``127.0.0.1:<port>`` to those sockets.

* The proxy socket speaks HTTP ``CONNECT``, plain absolute-URI HTTP (``GET http://host/...``) and
  SOCKS5 ``CONNECT`` (no auth; told apart by the first byte). Every destination goes through
  :class:`agentlite._network.EgressPolicy`: names are resolved here on the host, every resolved
  address is checked, and the connection is made to the checked address, so a name cannot resolve
  to something else between check and connect. Every refusal is logged with its reason to the box's
  ``egress.log`` (capped: one rotation of 1 MiB).
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
import logging.handlers
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from agentlite._network import (
    EgressPolicy,
    IpAddress,
    Refused,
    host_addresses,
    normalize_host,
    parse_allow_net,
    parse_network_mode,
)

log = logging.getLogger("agentlite.egress")

HEADER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
MAX_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS = 512
CHUNK = 256 * 1024
LOG_CAP = 1024 * 1024

_SOCKS_OK, _SOCKS_REFUSED, _SOCKS_UNREACHABLE, _SOCKS_BAD_COMMAND, _SOCKS_BAD_ADDRESS = 0, 2, 4, 7, 8


class _ClientError(Exception):
    """The client sent something this proxy will not serve; the message goes back to it."""


class EgressProxy:
    """Serves one box: the policy-checked proxy and the plain forwards."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._open = 0

    # -- connection accounting -----------------------------------------------------------------

    def _guarded(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self._open >= MAX_CONNECTIONS:
                log.warning("refused a connection: %d connections already open", self._open)
                writer.close()
                return
            self._open += 1
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                pass
            except Exception:
                log.exception("proxy connection failed")
            finally:
                self._open -= 1
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        return run

    async def serve(
        self, proxy_sock: socket.socket | None, forwards: list[tuple[socket.socket, int]]
    ) -> None:
        servers = []
        if proxy_sock is not None:
            servers.append(await asyncio.start_unix_server(self._guarded(self.handle_proxy), sock=proxy_sock,
                                                           limit=MAX_HEADER_BYTES))  # fmt: skip
        for sock, port in forwards:
            servers.append(await asyncio.start_unix_server(self._guarded(_forwarder(port)), sock=sock))
        await asyncio.gather(*(s.serve_forever() for s in servers))

    # -- the proxy -----------------------------------------------------------------------------

    async def handle_proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await asyncio.wait_for(reader.readexactly(1), HEADER_TIMEOUT)
        if first == b"\x05":
            await self._socks5(reader, writer)
        else:
            await self._http(first, reader, writer)

    async def open_checked(
        self, host: str, port: int, how: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
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
                return await asyncio.wait_for(
                    asyncio.open_connection(str(ip), port, limit=CHUNK), CONNECT_TIMEOUT
                )
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

    async def _http(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _http_reply(writer, 431, "request header too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _http_reply(writer, 400, "malformed request line")
            return
        method, target, version = parts
        try:
            if method == "CONNECT":
                host, port = _split_host_port(target, default_port=None)
                upstream = await self.open_checked(host, port, "CONNECT")
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await _pipe(reader, writer, *upstream)
                return
            if not target.lower().startswith("http://"):
                raise _ClientError("this proxy forwards http:// URLs and CONNECT (use CONNECT for https)")
            rest = target[len("http://") :]
            authority, slash, path = rest.partition("/")
            host, port = _split_host_port(authority.rpartition("@")[2], default_port=80)
            upstream_reader, upstream_writer = await self.open_checked(host, port, method)
        except _ClientError as exc:
            await _http_reply(writer, 400, str(exc))
            return
        except Refused as exc:
            await _http_reply(writer, 403, f"refused by the box's network policy: {exc}")
            return
        except (ConnectionError, OSError) as exc:
            await _http_reply(writer, 502, str(exc))
            return
        # One request per connection: a keep-alive client's next request may name another host, and
        # it must get its own policy check, so the upstream is told to close after answering.
        headers = [line for line in lines[1:] if line and not _is_hop_header(line)]
        if not any(line.lower().startswith("host:") for line in headers):
            headers.insert(0, f"Host: {authority}")
        request = f"{method} /{path if slash else ''} {version}\r\n" + "".join(f"{h}\r\n" for h in headers)
        upstream_writer.write((request + "Connection: close\r\n\r\n").encode("latin-1"))
        await _pipe(reader, writer, upstream_reader, upstream_writer)

    async def _socks5(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def read(n: int) -> bytes:
            return await asyncio.wait_for(reader.readexactly(n), HEADER_TIMEOUT)

        methods = await read((await read(1))[0])
        if 0 not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(b"\x05\x00")
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
            writer.write(_socks_reply(_SOCKS_BAD_ADDRESS))
            return
        (port,) = struct.unpack("!H", await read(2))
        if command != 1:
            writer.write(_socks_reply(_SOCKS_BAD_COMMAND))
            return
        try:
            upstream = await self.open_checked(host, port, "SOCKS5")
        except Refused:
            writer.write(_socks_reply(_SOCKS_REFUSED))
            return
        except (ConnectionError, OSError):
            writer.write(_socks_reply(_SOCKS_UNREACHABLE))
            return
        writer.write(_socks_reply(_SOCKS_OK))
        await _pipe(reader, writer, *upstream)


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


async def _http_reply(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reasons = {
        400: "Bad Request",
        403: "Forbidden",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
    }
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both directions have ended (half-closes are passed on)."""
    try:
        await asyncio.gather(_copy(client_reader, upstream_writer), _copy(upstream_reader, client_writer))
    finally:
        upstream_writer.close()
        with contextlib.suppress(Exception):
            await upstream_writer.wait_closed()


def _forwarder(port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=CHUNK),
                                              CONNECT_TIMEOUT)  # fmt: skip
        except (OSError, TimeoutError) as exc:
            log.info("exposed port %d is not answering: %s", port, exc)
            return
        await _pipe(reader, writer, *upstream)

    return forward


def _setup_log(path: str) -> None:
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_CAP, backupCount=1)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[0])
    _setup_log(config["log"])
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
