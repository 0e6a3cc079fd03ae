"""One sandbox box's network: its namespace, the in-box bridges, and the host-side helper.

Every mode but ``host`` gives the box its own network namespace (``bwrap --unshare-net``): only its
own loopback, so it reaches neither the host's 127.0.0.1 nor another box's TCP or abstract Unix
sockets. What it may reach comes in through Unix sockets in ``<box state>/net/``, bound into the box
at :data:`GUEST_NET_DIR`, where the box's init starts one ``socat`` bridge per socket on
``127.0.0.1:<port>`` before it reports ready:

* ``proxy.sock`` (modes ``egress`` and ``allowlist``): the egress proxy, at :data:`PROXY_PORT`
  inside the box, named by ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (both cases);
* ``port-<n>.sock``: one endpoint of the host's loopback exposed at the same port number ``n``, so
  its URL is the same inside and outside (the model endpoint when it is local, the actions server).

The host side of every socket is one helper process (:mod:`agentlite.box.egress`), spawned detached
with the box and killed with it. The sockets are bound here, before it starts, and passed as fds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlite.box.network import AllowEntry, NetworkMode
from agentlite.box.procs import BOX_MARKER_ENV, start_time

GUEST_NET_DIR = "/run/agentlite-net"
PROXY_PORT = 3128
NO_PROXY = "127.0.0.1,localhost,::1"
#: How many times the init reads /proc/net/tcp for its bridges before it gives up (each read takes
#: well under a millisecond; socat listens within a few).
_BRIDGE_WAIT_STEPS = 200000
_BACKLOG = 512
#: socat copies in blocks of this size (its default, 8 KiB, caps throughput well below the proxy).
_BRIDGE_BUFFER = 262144


@dataclass
class BoxNetwork:
    """What one box's network needs from the sandbox runtime: argv pieces, init steps, env, helper."""

    mode: NetworkMode
    allow: Sequence[AllowEntry]
    exposed_ports: Sequence[int]
    state_dir: Path
    helper_pid: int | None = None
    helper_started: float | None = None
    _sockets: list[socket.socket] = field(default_factory=list)

    @classmethod
    def for_box(cls, box_dir: Path, mode: NetworkMode, allow: Sequence[AllowEntry],
                exposed_ports: Sequence[int]) -> BoxNetwork:  # fmt: skip
        ports = [] if mode is NetworkMode.HOST else sorted(set(exposed_ports))
        return cls(mode=mode, allow=tuple(allow), exposed_ports=ports, state_dir=box_dir / "net")

    @property
    def has_proxy(self) -> bool:
        return self.mode in (NetworkMode.EGRESS, NetworkMode.ALLOWLIST)

    @property
    def proxy_port(self) -> int:
        # The box's own namespace has every port free, except those an exposed endpoint takes.
        port = PROXY_PORT
        while port in self.exposed_ports:
            port += 1
        return port

    def _bridges(self) -> list[tuple[int, str]]:
        bridges = [(self.proxy_port, "proxy.sock")] if self.has_proxy else []
        return bridges + [(port, f"port-{port}.sock") for port in self.exposed_ports]

    def bwrap_args(self) -> list[str]:
        if self.mode is NetworkMode.HOST:
            return []
        argv = ["--unshare-net"]
        if self._bridges():
            argv += ["--ro-bind", str(self.state_dir), GUEST_NET_DIR]
        return argv

    def init_steps(self) -> str:
        """Shell run by the box's init before it reports ready: start the bridges, wait until each
        listens (read from the box's own /proc/net/tcp)."""
        bridges = self._bridges()
        if not bridges:
            return ""
        steps = [
            'command -v socat >/dev/null || { echo "agentlite: socat is missing in the box" >&2; exit 1; }'
        ]
        for port, name in bridges:
            steps.append(
                f"socat -b{_BRIDGE_BUFFER} TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog={_BACKLOG} "
                f"UNIX-CONNECT:{GUEST_NET_DIR}/{name} </dev/null 3>&- 4>&- &"
            )
        # Shell builtins only (no fork per check): read the box's own /proc/net/tcp until every
        # bridge's 127.0.0.1 port is in state LISTEN (0A).
        wanted = " ".join(f"0100007F:{port:04X}" for port, _ in bridges)
        steps.append(
            f"i=0; while :; do left=0; for want in {wanted}; do found=0; "
            "while read -r _ local remote state _rest; do "
            '[ "$local $remote $state" = "$want 00000000:0000 0A" ] && { found=1; break; }; '
            "done < /proc/net/tcp; [ $found = 1 ] || left=1; done; [ $left = 0 ] && break; "
            f"i=$((i+1)); [ $i -lt {_BRIDGE_WAIT_STEPS} ] || "
            '{ echo "agentlite: the network bridges did not start" >&2; exit 1; }; done'
        )
        return "\n".join(steps) + "\n"

    def env(self) -> dict[str, str]:
        if not self.has_proxy:
            return {}
        url = f"http://127.0.0.1:{self.proxy_port}"
        env = {}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = url
        env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
        return env

    def state(self) -> dict[str, Any]:
        return {
            "network_mode": str(self.mode),
            "allow_net": [str(e) for e in self.allow],
            "exposed_ports": list(self.exposed_ports),
            "proxy_port": self.proxy_port if self.has_proxy else None,
            "egress_pid": self.helper_pid,
            "egress_started": self.helper_started,
        }

    # -- the host-side helper ------------------------------------------------------------------

    def start(self, run_as: tuple[int, int] | None = None) -> None:
        """Bind the sockets and spawn the helper (no-op when the box needs neither); the helper
        drops to ``run_as`` (uid, gid) once its log is open, so what the box sends it is never
        parsed by host root."""
        bridges = self._bridges()
        if not bridges:
            return
        self.state_dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # the box's uid may not be ours: it must reach the sockets
        fds: dict[str, int] = {}
        # Bound through /proc/self/fd/<folder>: a box's state folder can be longer than the 107
        # bytes a Unix socket path may have.
        dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for _port, name in bridges:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sockets.append(sock)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
                sock.bind(f"/proc/self/fd/{dir_fd}/{name}")
                os.chmod(name, 0o666, dir_fd=dir_fd)
                sock.listen(_BACKLOG)
                fds[name] = sock.fileno()
            # The helper sees the sockets at fds 3, 4, ... in the order of `bridges`.
            child_fd = {name: 3 + i for i, (_port, name) in enumerate(bridges)}
            config = {
                "mode": str(self.mode),
                "allow": [str(e) for e in self.allow],
                "log": str(self.state_dir.parent / "egress.log"),
                "proxy_fd": child_fd.get("proxy.sock"),
                "forwards": [[child_fd[f"port-{p}.sock"], p] for p in self.exposed_ports],
                "run_as": list(run_as) if run_as is not None else None,
            }
            self.helper_pid = _spawn_helper(
                config,
                [fds[name] for _port, name in bridges],
                self.state_dir.parent / "egress.err",
                marker=os.path.abspath(self.state_dir.parent),
            )
            self.helper_started = start_time(self.helper_pid)
        finally:
            os.close(dir_fd)
            # The helper holds its own copies; ours would keep the sockets open after it died.
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _spawn_helper(config: Mapping[str, Any], fds: list[int], stderr_path: Path, *, marker: str) -> int:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    # The box's marker (its state folder): the helper is found and reaped even if that state is lost.
    env[BOX_MARKER_ENV] = marker
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    argv = [sys.executable, "-m", "agentlite.box.egress", json.dumps(config)]
    err_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    null_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    # Copies above every target number, close-on-exec, so the dup2s below cannot clobber each other
    # and no other process spawned meanwhile inherits a socket.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null_fd, 0), (os.POSIX_SPAWN_DUP2, null_fd, 1),
                   (os.POSIX_SPAWN_DUP2, err_fd, 2)]  # fmt: skip
        actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(high)]
        # Its own session: like the box, it survives the host that started it.
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    finally:
        for fd in (*high, err_fd, null_fd):
            os.close(fd)


def helper_process(state: Mapping[str, Any]) -> tuple[Any, Any]:
    """The helper's pid and start time from a box's state, for killing it with the box."""
    return state.get("egress_pid"), state.get("egress_started")
