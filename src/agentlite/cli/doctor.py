"""``agentlite doctor``: the runtime chosen and why, and every prerequisite with its fix."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentlite.box import choose_runtime
from agentlite.cli._common import (
    HomeOption,
    JsonOption,
    RuntimeOption,
    err,
    home_path,
    out,
    print_json,
    table,
)
from agentlite.core.errors import AgentliteError
from agentlite.platform.doctor import all_checks

RayAddressOption = Annotated[
    str | None,
    typer.Option("--ray-address", help="Also report this Ray cluster (HOST:PORT or auto): nodes, box slots, "
                 "agentlite version on each (env AGENTLITE_RAY_ADDRESS with AGENTLITE_PLACEMENT=ray)."),
]  # fmt: skip


def doctor(home: HomeOption = None, runtime: RuntimeOption = None, json: JsonOption = False,
           ray_address: RayAddressOption = None) -> None:  # fmt: skip
    """Show which box runtime will be used and why, and what is missing."""
    home_dir = home_path(home)
    cluster = _cluster(ray_address)
    checks = all_checks(home_dir)
    try:
        choice = choose_runtime(runtime)
        chosen, reason, ok = choice.name, choice.reason, True
    except AgentliteError as exc:
        chosen, reason, ok = None, str(exc), False
    if json:
        print_json(
            {
                "runtime": chosen,
                "reason": reason,
                "home": str(home_dir),
                "checks": [c.as_json() for c in checks],
                **({"cluster": cluster} if cluster is not None else {}),
            }
        )
    else:
        t = table("check", "ok", "detail", "fix")
        for c in checks:
            t.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]missing[/red]", c.detail, c.fix or "")
        out.print(t)
        out.print(f"home: {home_dir}")
        if ok:
            out.print(f"runtime: [bold]{chosen}[/bold] ({reason})")
        else:
            err.print(f"[red]no runtime:[/red] {reason}")
        if cluster is not None:
            _print_cluster(cluster)
    if not ok:
        raise typer.Exit(1)


def _cluster(ray_address: str | None) -> dict[str, Any] | None:
    """The Ray cluster's report when one is asked for (``--ray-address`` or the placement's env)."""
    from agentlite.placement import PlacementConfig

    config = PlacementConfig.choose(None, ray_address=ray_address)
    if config.kind != "ray":
        return None
    from agentlite.placement.ray_cluster import describe_cluster, require_ray

    require_ray()
    return describe_cluster(config.ray_address, config.namespace, config.slots_of)


def _print_cluster(cluster: dict[str, Any]) -> None:
    t = table("node", "address", "box slots", "free", "this host's", "agentlite")
    for node in cluster["nodes"]:
        t.add_row(node["node_id"][:12], node["address"], str(node["box_slots"]), str(node["box_slots_free"]),
                  str(node.get("host_slots", node["box_slots"])), node["agentlite"])  # fmt: skip
    out.print(t)
    out.print(f"placement: [bold]ray[/bold] ({len(cluster['nodes'])} box nodes, {cluster['box_actors']} box actors"
              f" in namespace `{cluster['namespace']}`)")  # fmt: skip
    if not cluster["nodes"]:
        err.print(
            "[red]no node offers box_slots:[/red] start nodes with ray start --resources '{\"box_slots\": 4}'"
        )
