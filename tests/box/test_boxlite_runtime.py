"""The BoxLite adapter against the real ``boxlite`` package.

Host-side operations (create, get, list, remove) work on any Linux host; booting a VM needs hardware
virtualization, so the tests that exec in a VM are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest
from tests.oci import make_oci_layout

from agentlite.box.base import BoxSpec, BoxState, Volume
from agentlite.box.boxlite import ERROR_MAP, BoxliteRuntime
from agentlite.box.lifecycle import cleanup_orphans, run_in_box
from agentlite.box.ownership import RecordStore, ownership_for
from agentlite.box.probe import boxlite_checks
from agentlite.core.errors import BoxExists, BoxNotFound, ConfigError

_vm_missing = [c for c in boxlite_checks() if not c.ok]
needs_vm = pytest.mark.skipif(
    bool(_vm_missing),
    reason="BoxLite VMs cannot boot here: " + "; ".join(f"{c.name}: {c.detail}" for c in _vm_missing),
)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[BoxliteRuntime]:
    rt = BoxliteRuntime(tmp_path / "home", rootfs_path=make_oci_layout(tmp_path / "oci"))
    yield rt
    await rt.aclose()  # stops its home watcher: no thread outlives the test


async def test_create_get_list_remove_without_booting(runtime: BoxliteRuntime, tmp_path: Path) -> None:
    spec = BoxSpec(
        memory_mib=256,
        cpus=1,
        env={"A": "1"},
        volumes=[Volume(tmp_path, "/mnt/host", True)],
        working_dir="/workspace",
        network=False,
    )
    info = await runtime.create("agentlite-bl-g-1", spec)
    assert (info.name, info.runtime, info.state) == ("agentlite-bl-g-1", "boxlite", BoxState.CONFIGURED)
    assert await runtime.get("agentlite-bl-g-1") == info
    assert [b.name for b in await runtime.list()] == ["agentlite-bl-g-1"]
    with pytest.raises(BoxExists):
        await runtime.create("agentlite-bl-g-1", spec)
    await runtime.remove("agentlite-bl-g-1", force=True)
    assert await runtime.get("agentlite-bl-g-1") is None
    assert await runtime.list() == []
    with pytest.raises(BoxNotFound, match="agentlite-bl-g-1"):
        await runtime.remove("agentlite-bl-g-1", force=True)


async def test_cleanup_reaps_unowned_boxlite_boxes_and_keeps_owned_ones(
    runtime: BoxliteRuntime, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ownership_for(home).register("agentlite-bl-owned-1")
    await runtime.create("agentlite-bl-owned-1", BoxSpec(memory_mib=256))
    await runtime.create("agentlite-bl-orphan-1", BoxSpec(memory_mib=256))
    decisions = {d.name: d.action for d in await cleanup_orphans(runtime, home, "bl")}
    assert decisions == {"agentlite-bl-owned-1": "keep", "agentlite-bl-orphan-1": "remove"}
    assert [b.name for b in await runtime.list()] == ["agentlite-bl-owned-1"]
    await cleanup_orphans(runtime, home, "bl", include_live=True)
    assert await runtime.list() == []
    assert RecordStore(home).record_names() == []


def test_every_boxlite_error_is_mapped() -> None:
    theirs = {
        cls
        for _, cls in inspect.getmembers(boxlite, inspect.isclass)
        if issubclass(cls, boxlite.BoxliteError)
    }
    unmapped = {cls.__name__ for cls in theirs if cls not in ERROR_MAP and not cls.__name__.startswith("_")}
    assert unmapped == set()


def test_needs_an_image_or_a_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs `image` or `rootfs_path`"):
        BoxliteRuntime(tmp_path)
    with pytest.raises(ConfigError, match="not an OCI image layout"):
        BoxliteRuntime(tmp_path, rootfs_path=tmp_path)


@pytest.mark.vm
@needs_vm
async def test_exec_in_a_booted_vm(tmp_path: Path) -> None:
    runtime = BoxliteRuntime(tmp_path / "home", image="debian:bookworm-slim")
    lines: list[bytes] = []
    result = await run_in_box(runtime, tmp_path / "home", ["sh", "-c", "echo vm"], on_stdout=lines.append)
    assert (result.exit_code, lines) == (0, [b"vm\n"])
    assert await runtime.list() == []


def test_vm_boxes_get_the_host_ca_bundle_at_start_not_baked() -> None:
    from agentlite.box.boxlite import GUEST_CA_DIR, host_injections

    env, volumes = host_injections(BoxSpec(env={"A": "1"}))
    if not Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        assert (env, volumes) == ({"A": "1"}, [])
        return
    assert [(v.guest, v.read_only) for v in volumes] == [(GUEST_CA_DIR, True)]
    assert env["A"] == "1" and env["SSL_CERT_FILE"] == f"{GUEST_CA_DIR}/ca-certificates.crt"
    assert env["NODE_EXTRA_CA_CERTS"] == env["SSL_CERT_FILE"]
