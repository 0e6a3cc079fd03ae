"""What ``agentlite doctor`` checks above the box layer: the box network of the platform's agents,
the pinned agent CLIs, the guest image; with the box layer's own checks, the whole list."""

from __future__ import annotations

from pathlib import Path

from agentlite.box.network import HOST_MODE_WARNING, NETWORK_SETTINGS_FILE, load_network_settings
from agentlite.box.probe import Check, boxlite_checks, check_socat, limit_checks, sandbox_checks
from agentlite.core.agent_clis import CLI_NAMES, agent_clis_bin, cli_version
from agentlite.core.config import default_workdir
from agentlite.image.builder import find_image
from agentlite.platform.layout import PlatformPaths
from agentlite.platform.registry import Registry


def network_check(workdir: Path | None = None) -> Check:
    """The box network default, and loudly every agent of the platform folder in mode ``host``."""
    folder = workdir or default_workdir()
    registry_path = PlatformPaths(folder).registry
    shared: list[str] = []
    if registry_path.is_file():
        try:
            with Registry(registry_path) as registry:
                records = registry.list()
        except Exception as exc:  # doctor reports; it never fails on a check
            return Check("box network", False, f"cannot read the agents in {registry_path}: {exc}")
        for record in records:
            try:
                mode = load_network_settings(Path(record.workdir) / NETWORK_SETTINGS_FILE)["mode"]
            except Exception as exc:
                return Check("box network", False, f"agent `{record.name}`: {exc}")
            if mode == "host":
                shared.append(record.name)
    if shared:
        return Check("box network", False, f"agents {', '.join(shared)}: {HOST_MODE_WARNING}",
                     "set their network to egress (agent.set_network or `network` in the serve file)")  # fmt: skip
    return Check("box network", True, "default egress: each box has its own network namespace; outbound only "
                 "through its host-side proxy, never to the host's loopback or private ranges")  # fmt: skip


def agent_cli_checks() -> list[Check]:
    """Each pinned agent CLI with the version it reports."""
    bin_dir = agent_clis_bin()
    checks = []
    for name in CLI_NAMES:
        version = cli_version(name)
        if version is None:
            where = f"not in {bin_dir}" if bin_dir else "agent-clis/ is not installed"
            checks.append(
                Check(f"agent CLI {name}", False, where, "run scripts/install.sh (npm ci in agent-clis/)")
            )
        else:
            checks.append(Check(f"agent CLI {name}", True, f"{version} at {bin_dir}"))
    return checks


def image_check(home: Path | None) -> Check:
    """Whether the guest image for the current inputs is built (BoxLite's default, sandbox image mode)."""
    if home is None:
        return Check("guest image", False, "no home given")
    try:
        info = find_image(home)
    except Exception as exc:  # doctor reports; it never fails on a check
        return Check("guest image", False, f"cannot tell: {exc}", "agentlite image build")
    if info is None:
        return Check("guest image", False, "not built for the current inputs (built on first use)",
                     "agentlite image build")  # fmt: skip
    versions = ", ".join(f"{k} {v}" for k, v in info.versions.items() if v)
    return Check("guest image", True, f"{info.key}: {info.compressed_size / 1e6:.0f} MB compressed, "
                 f"{info.digest[:19]}; {versions}")  # fmt: skip


def all_checks(home: Path | None = None, workdir: Path | None = None) -> list[Check]:
    """Every check doctor shows, the box layer's first."""
    return [
        *sandbox_checks(),
        check_socat(),
        network_check(workdir),
        *limit_checks(),
        *boxlite_checks(),
        *agent_cli_checks(),
        image_check(home),
    ]
