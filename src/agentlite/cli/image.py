"""``agentlite image build|list|rm|inspect``: the guest image boxes run on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.cli._common import HomeOption, JsonOption, err, home_path, out, print_json, table

app = typer.Typer(help="Build and manage the guest image (Debian, Python, Node, the runner, the agent CLIs).")


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:,.0f} MB"


def _row(info: Any) -> dict[str, Any]:
    from agentlite.image.builder import disk_usage

    data = info.as_json()
    data["disk_size"] = disk_usage(info.layout)
    return data


@app.command("build")
def build(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the OCI layout here instead of the cache.")
    ] = None,
    backends: Annotated[
        str,
        typer.Option(
            "--backends", help="Comma-separated backends whose CLIs go in: codex, claude_code, acp."
        ),
    ] = "codex,claude_code",
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when the cache has this image.")
    ] = False,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Build the guest image from Debian packages (cached by its inputs; a cache hit returns at once)."""
    from agentlite.image.builder import build_image

    started = time.monotonic()
    state: dict[str, Any] = {}

    def progress(step: str, seconds: float | None) -> None:
        if json:
            return
        status = state.get("status")
        if seconds is None:
            if status is None:
                state["status"] = status = err.status(f"{step} ...")
                status.start()
            status.update(f"[bold]{step}[/] ... (total {time.monotonic() - started:.0f} s)")
        else:
            err.print(f"[green]✓[/] {step:<10} {seconds:6.1f} s", markup=True)

    try:
        info = build_image(
            home_path(home) if output is None or home is not None else None,
            output=output,
            backends=[b for b in backends.split(",") if b.strip()],
            force=force,
            progress=progress,
        )
    finally:
        if (status := state.get("status")) is not None:
            status.stop()
    if json:
        print_json(_row(info))
        return
    if info.cached:
        err.print(f"cache hit: image {info.key} ({time.monotonic() - started:.2f} s)")
    else:
        err.print(f"built image {info.key} in {info.build_seconds:.0f} s")
    _show(info)


def _show(info: Any) -> None:
    from agentlite.image.builder import disk_usage

    t = table("field", "value")
    t.add_row("key", info.key)
    t.add_row("layout", str(info.layout))
    t.add_row("digest", info.digest)
    t.add_row("layer", f"{_mb(info.compressed_size)} compressed, {_mb(info.uncompressed_size)} unpacked")
    t.add_row("on disk", _mb(disk_usage(info.layout)))
    t.add_row("backends", ", ".join(info.backends))
    for name, value in info.versions.items():
        t.add_row(name, value or "-")
    if info.steps:
        t.add_row("build steps", ", ".join(f"{k} {v:.1f} s" for k, v in info.steps.items()))
    out.print(t)


@app.command("list")
def list_command(home: HomeOption = None, json: JsonOption = False) -> None:
    """List the images in the cache."""
    from agentlite.image.builder import list_images

    images = list_images(home_path(home))
    if json:
        print_json([_row(i) for i in images])
        return
    t = table("key", "digest", "compressed", "backends", "agentlite", "layout")
    for i in images:
        t.add_row(
            i.key,
            i.digest[:19],
            _mb(i.compressed_size),
            ",".join(i.backends),
            i.versions.get("agentlite") or "-",
            str(i.layout),
        )
    out.print(t if images else "no images (build one with `agentlite image build`)")


@app.command("rm")
def rm_command(
    key: Annotated[str, typer.Argument(help="Image key (a unique prefix works).")], home: HomeOption = None
) -> None:
    """Remove an image (its layout and unpacked tree) from the cache."""
    from agentlite.image.builder import remove_image

    removed = remove_image(home_path(home), key)
    out.print(f"removed image {removed}")


@app.command("inspect")
def inspect_command(
    key: Annotated[
        str | None, typer.Argument(help="Image key; default: the image the current inputs build.")
    ] = None,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Show an image: size, digest, and what is inside (Python, Node, each CLI, agentlite)."""
    from agentlite.core.errors import ConfigError
    from agentlite.image.builder import find_image

    info = find_image(home_path(home), key)
    if info is None:
        raise ConfigError(
            f"no image {'`' + key + '` ' if key else 'for the current inputs '}in the cache; "
            "build it with `agentlite image build`"
        )
    if json:
        print_json(_row(info))
        return
    _show(info)
