"""A box's guest layout: which Python runs the runner and the MCP server, the environment the box
starts from, the agent's home and user, and where the guest reaches the host's loopback.

The run layer asks the runtime for its layout (:meth:`BoxRuntime.guest_layout`) instead of naming
the host's ``sys.executable``: a host-root sandbox sees the host's Python at the host's path, but a
box on the guest image (sandbox image mode, a BoxLite VM) has only the image's venv. In a VM the
host's ``127.0.0.1`` is not the guest's: BoxLite's network gives the host's loopback to the guest
at :data:`BOXLITE_HOST_IP`, so loopback URLs the run hands to the box are rewritten to it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

# The guest image's layout (what :mod:`agentlite.image.builder` puts where): the box layer runs
# boxes on it, the builder makes it.
GUEST_USER = "agent"
GUEST_UID = 1000
GUEST_HOME = "/home/agent"
GUEST_VENV = "/opt/agentlite"
GUEST_CLIS = "/opt/agent-clis"
GUEST_PYTHON = f"{GUEST_VENV}/bin/python"
GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GUEST_PATH = (
    f"{GUEST_VENV}/bin:{GUEST_CLIS}/node_modules/.bin:"
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
)
#: The environment every box on the image gets (no host values).
GUEST_ENV = {
    "PATH": GUEST_PATH,
    "HOME": GUEST_HOME,
    "LANG": "C.UTF-8",
    "AGENTLITE_AGENT_CLIS": GUEST_CLIS,
    "SSL_CERT_FILE": GUEST_CA_BUNDLE,
    "NODE_EXTRA_CA_CERTS": GUEST_CA_BUNDLE,
}


#: The address at which BoxLite's user-mode network (gvproxy) NATs guest traffic to the host's
#: 127.0.0.1 (also ``host.boxlite.internal``; the number needs no DNS inside the guest).
BOXLITE_HOST_IP = "192.168.127.254"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class GuestLayout:
    """What a box's commands see of themselves and of the host."""

    #: The interpreter the runner and the in-box MCP server run with.
    python: str
    #: The agent's home inside the box (the group's agent state is mounted there).
    home: str = "/home/agent"
    #: The uid the box's commands have inside the box (the host maps it to an unprivileged user).
    uid: int = 0
    #: The system folders of PATH inside the box, after the run's own (the agent CLIs).
    base_path: str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    #: The environment every command starts from (the image's own); the run's values go on top.
    env: Mapping[str, str] = field(default_factory=dict)
    #: The address the guest reaches the host's loopback at; ``None`` when loopback URLs work as
    #: they are (a sandbox shares or bridges the host's loopback ports it needs).
    host_loopback: str | None = None

    def runner_argv(self) -> list[str]:
        return [self.python, "-m", "agentlite.guest.runner"]

    def box_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` over the layout's own; the layout's PATH entries come first."""
        merged = {**self.env, **env}
        if "PATH" in self.env:
            own = self.env["PATH"].split(":")
            rest = [p for p in env.get("PATH", "").split(":") if p and p not in own]
            merged["PATH"] = ":".join([*own, *rest])
        return merged

    def guest_url(self, url: str) -> str:
        """``url`` as the guest must dial it (host loopback URLs moved to :attr:`host_loopback`)."""
        if self.host_loopback is None:
            return url
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return url
        if host not in _LOOPBACK_NAMES:
            return url
        netloc = self.host_loopback if port is None else f"{self.host_loopback}:{port}"
        if parts.username or parts.password:
            netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))


def host_layout() -> GuestLayout:
    """A host-root box: the host's own Python at its own path, as uid 0 of the box (the home and
    system PATH are the layout's defaults, which the sandbox's host-root boxes use)."""
    return GuestLayout(python=sys.executable)


def image_layout(host_loopback: str | None = None) -> GuestLayout:
    """A box on the guest image (:mod:`agentlite.image.builder`): the image's venv Python, environment,
    home and user."""
    return GuestLayout(python=GUEST_PYTHON, env=dict(GUEST_ENV), home=GUEST_HOME, uid=GUEST_UID,
                       host_loopback=host_loopback)  # fmt: skip
