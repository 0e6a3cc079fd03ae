"""A box's network: the four modes, allowlist entries, and the egress policy the proxy enforces.

Modes (per box, per agent, per CLI run):

* ``none``: the box has its own network namespace with only loopback. The endpoints the run needs
  (its model endpoint on the host's loopback, the actions server) are still bridged in, one port each.
* ``egress`` (the default): ``none`` plus a host-side proxy (HTTP CONNECT, absolute-URI HTTP and
  SOCKS5 on one port) that connects anywhere public: it resolves names on the host and refuses
  loopback, link-local (the metadata address included), private, unique-local, carrier-grade NAT,
  multicast, unspecified and reserved ranges and the host's own addresses, checking every resolved
  address and connecting to the checked one (no DNS-rebinding window).
* ``allowlist``: ``egress`` limited to the listed entries: ``example.com`` (that name, any port),
  ``*.example.com`` (any name below it, not the name itself), ``example.com:443`` or
  ``10.0.0.5:8080`` (that host and port). An exact entry with an explicit port is the operator
  naming one service, so it may be on a loopback or private address (how a box reaches a local
  server on purpose); entries without a port, and wildcards with one, get the same address checks
  as ``egress``.
* ``host``: the host's own network, shared (the behaviour before network namespaces): every service
  on the host's 127.0.0.1 is reachable and the box can listen on the host's interfaces. Only when
  asked for; ``doctor`` and the run log say so.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlite.core.atomic import write_atomic
from agentlite.core.errors import AgentliteError, ConfigError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkMode(enum.StrEnum):
    NONE = "none"
    EGRESS = "egress"
    ALLOWLIST = "allowlist"
    HOST = "host"


DEFAULT_NETWORK_MODE = NetworkMode.EGRESS
HOST_MODE_WARNING = (
    "network mode `host`: the box shares the host's network and can reach every service on the "
    "host's 127.0.0.1 and its local network"
)


def parse_network_mode(text: str) -> NetworkMode:
    try:
        return NetworkMode(text.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in NetworkMode)
        raise ConfigError(f"network mode `{text}` is not one of: {choices}") from None


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name (``*.`` prefix for any name below a domain) or an IP
    address, and an optional port."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        raw = text.strip().lower()
        host, port = raw, None
        if raw.startswith("["):  # [v6]:port or [v6]
            end = raw.find("]")
            if end < 0:
                raise ConfigError(f"allowlist entry `{text}` has an unclosed `[`")
            host, rest = raw[1:end], raw[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ConfigError(f"allowlist entry `{text}` must look like [ADDRESS]:PORT")
                port = _parse_port(text, rest[1:])
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
            port = _parse_port(text, port_text)
        host = host.rstrip(".")
        if _ip_or_none(host) is None and not _valid_host_pattern(host):
            raise ConfigError(
                f"allowlist entry `{text}` is not a host name, `*.domain`, an IP address or HOST:PORT"
            )
        return cls(host=host, port=port)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        if (mine := _ip_or_none(self.host)) is not None:
            return mine == _ip_or_none(host)
        return host == self.host

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port is None else f"{shown}:{self.port}"


def parse_allow_net(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    return tuple(AllowEntry.parse(e) for e in entries)


def _parse_port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"allowlist entry `{text}` has port `{port_text}`; use 1-65535")
    return int(port_text)


def _valid_host_pattern(host: str) -> bool:
    name = host[2:] if host.startswith("*.") else host
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(
        label and len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
        for label in labels
    )  # fmt: skip


def _ip_or_none(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def refusal_reason(ip: IpAddress, own: frozenset[IpAddress]) -> str | None:
    """Why egress must not connect to ``ip``, or ``None`` when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # 6to4 carries an IPv4 address that a relay (or the host's own tunnel) delivers to:
    # 2002:7f00:1:: is 127.0.0.1, and the v6 form alone looks global.
    six_to_four = ip.sixtofour if isinstance(ip, ipaddress.IPv6Address) else None
    if six_to_four is not None and (why := refusal_reason(six_to_four, own)) is not None:
        return f"6to4 for {six_to_four}, {why}"
    for test, why in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (includes the cloud metadata address)"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_private, "a private or unique-local range"),
        (ip.is_reserved, "a reserved range"),
        (not ip.is_global, "not a public address"),
        (ip in own, "an address of this host"),
    ):
        if test:
            return why
    return None


def host_addresses() -> frozenset[IpAddress]:
    """Every address assigned to this host's interfaces (read from /proc, no tools needed)."""
    found: set[IpAddress] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL" and (ip := _ip_or_none(previous.split()[-1])) is not None:
            found.add(ip)
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hex_ip = line.split()[0]
            found.add(ipaddress.IPv6Address(int(hex_ip, 16)))
    except (OSError, ValueError, IndexError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            if (ip := _ip_or_none(str(info[4][0]))) is not None:
                found.add(ip)
    except OSError:
        pass
    return frozenset(found)


class Refused(AgentliteError):
    """The policy refuses a destination; the message says why."""


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations a box's proxy may connect to."""

    mode: NetworkMode
    allow: Sequence[AllowEntry] = ()
    own_addresses: frozenset[IpAddress] = frozenset()

    def entry_for(self, host: str, port: int) -> AllowEntry | None:
        return next((e for e in self.allow if e.matches(host, port)), None)

    def check(self, host: str, port: int, addresses: Sequence[IpAddress]) -> None:
        """Raise :class:`Refused` unless every address ``host`` resolved to may be connected to."""
        if self.mode not in (NetworkMode.EGRESS, NetworkMode.ALLOWLIST):
            raise Refused(f"network mode `{self.mode}` has no egress")
        explicit = False
        if self.mode is NetworkMode.ALLOWLIST:
            entry = self.entry_for(host, port)
            if entry is None:
                raise Refused(f"{host}:{port} is not in the allowlist")
            # Only an exact host:port names one service on purpose; a wildcard with a port still
            # gets the address checks (a name below it may resolve to 127.0.0.1 at someone's whim).
            explicit = entry.port is not None and not entry.host.startswith("*.")
        if not addresses:
            raise Refused(f"{host} resolved to no address")
        if explicit:
            return
        for ip in addresses:
            if (why := refusal_reason(ip, self.own_addresses)) is not None:
                where = f"{host} is" if str(ip) == host else f"{host} resolves to {ip}, which is"
                raise Refused(f"{where} {why}")


def loopback_ports(urls: Iterable[str | None]) -> list[int]:
    """The ports of those ``urls`` that point at this host's loopback (``127.0.0.1``, ``localhost``):
    the endpoints a box must have bridged in to reach them at the same URL."""
    from urllib.parse import urlsplit

    ports = []
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            continue
        if parts.hostname in ("127.0.0.1", "localhost") and port is not None and port not in ports:
            ports.append(port)
    return ports


def model_endpoint_entries(base_url: str | None) -> list[str]:
    """The allowlist entry (``host:port``) a run adds for its model endpoint when that is remote:
    an allowlist that blocked the run's own model would only break it."""
    from urllib.parse import urlsplit

    if not base_url or loopback_ports([base_url]):
        return []
    try:
        parts = urlsplit(base_url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return []
    if not parts.hostname or port is None:
        return []
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return [f"{host}:{port}"]


NETWORK_SETTINGS_FILE = "network.json"


def load_network_settings(path: Path) -> dict[str, Any]:
    """An agent's saved network settings (``{"mode", "allow_net"}``); the default when there are none.
    A damaged file is an error naming it, never a silent fall back to more network."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {"mode": str(DEFAULT_NETWORK_MODE), "allow_net": []}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"network settings `{path}` are unreadable: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("allow_net", []), list):
        raise ConfigError(f"network settings `{path}` must be an object with `mode` and `allow_net`")
    mode = parse_network_mode(str(raw.get("mode", DEFAULT_NETWORK_MODE)))
    allow = [str(e) for e in raw.get("allow_net", [])]
    parse_allow_net(allow)
    return {"mode": str(mode), "allow_net": allow}


def save_network_settings(path: Path, mode: str, allow_net: Sequence[str]) -> dict[str, Any]:
    parsed = parse_network_mode(mode)
    entries = [str(e) for e in parse_allow_net(allow_net)]
    if entries and parsed is not NetworkMode.ALLOWLIST:
        raise ConfigError(f"allow_net entries need network mode `allowlist`, not `{parsed}`")
    settings = {"mode": str(parsed), "allow_net": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(settings, indent=2) + "\n").encode(), fsync=False, mode=0o644)
    return settings


def normalize_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")
