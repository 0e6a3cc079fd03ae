"""The operators' dashboard in a real browser (Debian's headless Chromium, driven by Playwright)
against real platforms: a real box of a separate host process, killed with SIGKILL; a real codex
turn against the offline model streaming on its run page; its tokens on the usage chart. And the
door: no page or stream without the token, no non-loopback bind without ``--allow-remote``.

Screenshots go to ``test-artifacts/dashboard/`` (ignored by git); each test prints their paths.
Chromium runs with ``--no-sandbox`` when the tests run as root (its own sandbox refuses root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlite.box.ownership import HEARTBEAT_ENV
from agentlite.box.sandbox import SandboxRuntime
from agentlite.dashboard.auth import TOKEN_ENV, form_key
from conftest import HostProcess, needs_sandbox

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
TOKEN = "dashboard-test-token-0123456789"
HEARTBEAT = 0.5

needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="headless Chromium not installed (scripts/install.sh installs Debian's `chromium`)",
)


# -- helpers --------------------------------------------------------------------------------------


class DashboardProcess:
    """``agentlite dashboard`` as its own process; its login line gives the address."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "agentlite", "dashboard", "--workdir", str(workdir), "--port", "0",
                "--runtime", "sandbox", *args]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, TOKEN_ENV: TOKEN, **(env or {})})  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("dashboard: "):
            self.close()
            raise AssertionError(
                f"no login line: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.login = line.split(" ", 1)[1].strip()
        self.base = self.login.split("/?", 1)[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def dashboard_process(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[DashboardProcess]:
    process = DashboardProcess(workdir, *args, env=env)
    try:
        yield process
    finally:
        process.close()


def fetch(url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None,
          stream: bool = False) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request without following redirects; a stream is read only up to its first event."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            body = response.readline() if stream else response.read()
            return response.status, dict(response.headers), body
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def shot(page: Any, name: str) -> Any:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    print(f"screenshot: {path}")
    return page.screenshot(path=str(path), full_page=True)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as driver:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = await driver.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


async def poll(condition: Any, what: str, timeout: float) -> float:
    """Await ``condition()`` (a coroutine function) until true; the seconds it took."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# -- the door -------------------------------------------------------------------------------------


ROUTES = ["/", "/boxes", "/agents", "/runs", "/tasks", "/usage", "/boxes/remove?name=agentlite-x-g-1",
          "/runs/main/run-1", "/static/dashboard.js", "/stream/boxes", "/stream/agents", "/stream/runs",
          "/stream/tasks", "/stream/usage", "/stream/run/main/run-1"]  # fmt: skip


def test_without_the_token_every_page_and_stream_answers_401(tmp_path: Path) -> None:
    with dashboard_process(tmp_path / "data") as dash:
        assert dash.login.startswith("http://127.0.0.1:") and dash.login.endswith(f"/?token={TOKEN}")
        for route in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-000000000"},
                {"Cookie": "agentlite_dashboard=nope"},
            ):
                status, _, _ = fetch(dash.base + route, headers=headers, stream=route.startswith("/stream"))
                assert status == 401, (route, headers, status)
            wrong = "&" if "?" in route else "?"
            assert fetch(f"{dash.base}{route}{wrong}token=not-the-token")[0] == 401, route
        for action in ("/boxes/remove", "/tasks/change"):
            assert fetch(dash.base + action, data=b"name=x")[0] == 401, action
        # The token once in the address: a cookie, and the address without it.
        status, headers, _ = fetch(f"{dash.base}/usage?token={TOKEN}")
        assert status == 303 and headers["location"] == "/usage"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";", 1)[0]}
        for route in ROUTES:
            is_stream = route.startswith("/stream")
            status, _, body = fetch(dash.base + route, headers=jar, stream=is_stream)
            assert status in (200, 303, 404), (route, status)
            if is_stream and status == 200:
                assert body.startswith(b"event: "), route
        assert fetch(dash.base + "/boxes", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert fetch(dash.base + "/boxes", headers={"X-Agentlite-Token": TOKEN})[0] == 200
        # A form posted with the cookie alone must carry the form key (no cross-site posts).
        posted = fetch(dash.base + "/boxes/remove", headers=jar, data=b"name=agentlite-x-g-1")
        assert posted[0] == 403
        key = form_key(TOKEN).encode()
        assert (
            fetch(dash.base + "/boxes/remove", headers=jar, data=b"name=agentlite-x-g-1&form_key=" + key)[0]
            == 200
        )


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})})  # fmt: skip


def test_a_non_loopback_bind_or_a_weak_token_is_refused_at_start(tmp_path: Path) -> None:
    workdir = str(tmp_path / "data")
    for host in ("0.0.0.0", "192.0.2.7", "::", "dashboard.example"):
        refused = _cli("dashboard", "--workdir", workdir, "--host", host, "--port", "0")
        assert refused.returncode == 2, refused
        assert (
            f"--host {host} is not a loopback address" in refused.stderr
            and "--allow-remote" in refused.stderr
        )
    assert _cli("dashboard", "--workdir", workdir, "--port", "70000").returncode == 2
    weak = _cli("dashboard", "--workdir", workdir, "--port", "0", env={TOKEN_ENV: "short"})
    assert weak.returncode == 2 and "at least 16" in weak.stderr
    config = tmp_path / "agentlite.toml"
    config.write_text(f'workdir = "{workdir}"\n')
    served = _cli("serve", "--config", str(config), "--dashboard", "--host", "0.0.0.0")
    assert served.returncode == 2 and "--allow-remote" in served.stderr
    assert not (tmp_path / "data" / "store").exists()  # refused before anything was opened


# -- boxes ----------------------------------------------------------------------------------------


@needs_browser
@needs_sandbox
async def test_the_boxes_page_shows_a_live_owner_then_dead_within_a_heartbeat_and_removes_the_box(
    tmp_path: Path, browser: Any, hosts: list[HostProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, str(HEARTBEAT))  # the host's heartbeat and the page's refresh
    workdir = tmp_path / "data"
    home = workdir / ".boxlite"
    home.mkdir(parents=True)
    host = HostProcess(home, "dash", hold=120, cleanup_first=False)
    hosts.append(host)
    host.wait_for("during_exec")
    box = host.box
    assert box is not None
    try:
        with dashboard_process(workdir) as dash:
            page = await browser.new_page()
            await page.goto(dash.login)
            assert page.url.endswith("/boxes")
            row = page.locator("tr", has=page.locator(f"text={box}"))
            await row.wait_for()
            assert await row.locator(".verdict").inner_text() == "live"
            assert f"owner pid {host.proc.pid} alive" in await row.inner_text()
            assert "kept: owner pid" in await row.inner_text()  # cleanup --dry-run's words
            await poll(lambda: _live_status(page), "the live stream to connect", 30)
            await shot(page, "boxes-live")
            # A narrow window: nothing but the table scrolls sideways.
            await page.set_viewport_size({"width": 380, "height": 800})
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            await shot(page, "boxes-narrow")
            await page.set_viewport_size({"width": 1280, "height": 720})

            host.kill9()
            took = await poll(
                lambda: _verdict_is(row, "dead"), "the page to show `dead`", 10 * HEARTBEAT + 10
            )
            print(f"boxes page showed `dead` {took:.2f} s after kill -9 (heartbeat {HEARTBEAT} s)")
            text = await row.inner_text()
            assert f"owner pid {host.proc.pid} gone (lease released)" in text
            assert f"would remove: owner pid {host.proc.pid} gone (lease released)" in text
            await shot(page, "boxes-dead")

            # Removing works without JavaScript: a link, a confirm page, a form.
            plain = await browser.new_context(java_script_enabled=False)
            form_page = await plain.new_page()
            await form_page.goto(dash.login)
            await (
                form_page.locator("tr", has=form_page.locator(f"text={box}"))
                .get_by_role("link", name="Remove…")
                .click()
            )
            assert "Remove a box?" in await form_page.locator("h1").inner_text()
            assert "would remove: owner pid" in await form_page.locator("main").inner_text()
            await shot(form_page, "boxes-remove-confirm")
            await form_page.get_by_role("button", name="Remove box").click()
            result = await form_page.locator("main").inner_text()
            assert f"removed: owner pid {host.proc.pid} gone (lease released)" in result
            await shot(form_page, "boxes-removed")
            await plain.close()
            assert [b.name for b in await SandboxRuntime(home).list()] == []
            await poll(lambda: _gone(page, box), "the box to leave the live page", 30)
    finally:
        for leftover in await SandboxRuntime(home).list():
            await SandboxRuntime(home).remove(leftover.name, force=True)


async def _live_status(page: Any) -> bool:
    return await page.locator("#live-status").inner_text() == "live"


async def _verdict_is(row: Any, word: str) -> bool:
    return await row.locator(".verdict").inner_text() == word


async def _gone(page: Any, box: str) -> bool:
    return await page.locator(f"text={box}").count() == 0
