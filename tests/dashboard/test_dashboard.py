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
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.box.ownership import HEARTBEAT_ENV
from agentlite.box.sandbox import SandboxRuntime
from agentlite.dashboard.auth import TOKEN_ENV, form_key
from agentlite.dashboard.server import serve_dashboard
from agentlite.platform.usage import usage_summary
from agentlite.run.journal import is_final, journal_of, read_journal
from agentlite.testing import ModelServer, ScriptedUsage
from conftest import HostProcess, needs_codex, needs_sandbox

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
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
    # Playwright is a pinned dev dependency the install step always puts in: missing, the install
    # is broken, and the browser tests must fail, not skip.
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
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
        status, headers, _ = fetch(dash.base + "/boxes", headers={"X-Agentlite-Token": TOKEN})
        assert status == 200
        # Never framed, no referrer (the first address carries the token), only its own scripts.
        for answer in (headers, fetch(dash.base + "/boxes")[1]):
            assert "frame-ancestors 'none'" in answer["content-security-policy"]
            assert answer["referrer-policy"] == "no-referrer" and answer["x-frame-options"] == "DENY"
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


def test_serve_dashboard_serves_the_running_agents_and_stops_with_the_service(tmp_path: Path) -> None:
    config = tmp_path / "agentlite.toml"
    config.write_text(
        'workdir = "data"\nruntime = "sandbox"\n[[agents]]\nname = "main"\n'
        'backend = { type = "codex", base_url = "http://127.0.0.1:9/v1" }\n'
        '[[agents.groups]]\njid = "t:ops"\nname = "ops"\nfolder = "ops"\nis_main = true\n'
    )
    env = {**os.environ, "NO_COLOR": "1", TOKEN_ENV: TOKEN}
    argv = [sys.executable, "-m", "agentlite", "serve", "--config", str(config), "--dashboard", "--port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        base = line.split(" ", 1)[1].strip().split("/?", 1)[0]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = fetch(base + "/agents", headers=auth)
        assert status == 200 and b"t:ops" in body and b"codex" in body
        assert fetch(base + "/agents")[0] == 401
        # An agent another process creates shows without a restart (the registry is read afresh).
        made = _cli("agents", "create", "late", "--workdir", str(tmp_path / "data"), "--json")
        assert made.returncode == 0, made.stderr
        assert b"late" in fetch(base + "/agents", headers=auth)[2]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


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
            await form_page.get_by_role("link", name=f"Remove box {box}…").click()  # named for screen readers
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


@needs_browser
@needs_sandbox
async def test_removing_a_live_owners_box_asks_for_the_include_live_box_and_works_without_javascript(
    tmp_path: Path, browser: Any, hosts: list[HostProcess]
) -> None:
    # Boxes of another home than the platform's (`agentlite run` and `exec` use the default home).
    home = tmp_path / "home"
    home.mkdir()
    host = HostProcess(home, "live", hold=120, cleanup_first=False)
    hosts.append(host)
    host.wait_for("during_exec")
    box = host.box
    assert box is not None
    try:
        with dashboard_process(tmp_path / "data", "--home", str(home)) as dash:
            plain = await browser.new_context(java_script_enabled=False)
            page = await plain.new_page()
            await page.goto(dash.login.replace("/?token=", f"/boxes/remove?name={box}&token="))
            assert "kept: owner pid" in await page.locator("main").inner_text()
            await page.get_by_role("button", name="Remove box").click()  # the box left unticked
            assert f"kept: owner pid {host.proc.pid} alive" in await page.locator("main").inner_text()
            assert [b.name for b in await SandboxRuntime(home).list() if b.running] == [box]
            await page.goto(f"{dash.base}/boxes/remove?name={box}")
            await page.get_by_label("Remove it although its owner is alive", exact=False).check()
            await shot(page, "boxes-remove-live-confirm")
            await page.get_by_role("button", name="Remove box").click()
            done = await page.locator("main").inner_text()
            assert f"removed: operator request (owner pid {host.proc.pid} alive" in done
            assert await SandboxRuntime(home).list() == []
            await plain.close()
    finally:
        for leftover in await SandboxRuntime(home).list():
            await SandboxRuntime(home).remove(leftover.name, force=True)


async def _live_status(page: Any) -> bool:
    return await page.locator("#live-status").inner_text() == "live"


async def _verdict_is(row: Any, word: str) -> bool:
    return await row.locator(".verdict").inner_text() == word


async def _gone(page: Any, box: str) -> bool:
    return await page.locator(f"text={box}").count() == 0


# -- a run, its usage, the agents and tasks pages ----------------------------------------------


@contextlib.asynccontextmanager
async def dashboard_beside(platform: agentlite.AgentLite) -> AsyncIterator[str]:
    """The dashboard served in this process beside the platform's started agents, as
    ``agentlite serve --dashboard`` runs it; yields the login address."""
    stop = asyncio.Event()
    lines: list[str] = []
    server = asyncio.create_task(
        serve_dashboard(platform, port=0, token=TOKEN, stop=stop, announce=lines.append)
    )

    async def announced() -> bool:
        if server.done():
            server.result()  # its error, if it failed
        return bool(lines)

    await poll(announced, "the dashboard's login line", 30)
    try:
        yield lines[0].split(" ", 1)[1]
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)


@needs_browser
@needs_sandbox
@needs_codex
async def test_a_codex_turn_streams_on_its_run_page_with_one_final_and_its_tokens_on_the_usage_chart(
    tmp_path: Path, browser: Any
) -> None:
    # The model waits before it answers, so the run page is open while the turn still runs.
    async with ModelServer(scenario="text", delay=4.0) as model:
        model.usage = ScriptedUsage(input_tokens=1234, output_tokens=567)
        backend = {
            "type": "codex",
            "base_url": model.openai_base_url,
            "model": "gpt-5-mini",
            "max_retries": 0,
        }
        async with await agentlite.create(
            workdir=tmp_path / "data", runtime="sandbox", timezone="UTC"
        ) as platform:
            agent = await platform.create_agent("main", backend=backend)
            await agent.start()
            agent.register_group("q:ops", name="ops", folder="ops", requires_trigger=False)
            agent.set_budget("*", daily=5000, unit="tokens")
            task = await agent.schedule_task(jid="q:ops", prompt="nightly report", schedule_type="cron",
                                             schedule_value="0 3 * * *")  # fmt: skip
            async with dashboard_beside(platform) as login:
                page = await browser.new_page()
                await page.goto(login.replace("/?token=", "/runs?token="))
                assert page.url.endswith("/runs")
                asking = asyncio.create_task(agent.ask("q:ops", "hello"))
                link = page.locator("a", has_text="run-").first
                await link.wait_for(timeout=60_000)  # the live Runs page shows the new run
                await link.click()
                await page.locator("li.event").first.wait_for(timeout=60_000)
                streamed_before_final = await page.locator("#final .final").count() == 0
                await shot(page, "run-streaming")
                result = await asyncio.wait_for(asking, 120)
                assert (result.status, result.result) == ("success", "hi from the offline model")
                await page.locator("#live-status", has_text="finished").wait_for(timeout=60_000)
                assert streamed_before_final, "the page had the final before any event streamed"
                assert await page.locator(".final").count() == 1
                final = page.locator("#final .final")
                assert await final.get_attribute("data-status") == "success"
                assert "hi from the offline model" in await final.inner_text()
                [run] = agent.store.runs.list()
                assert run.state == "delivered"
                journal = [e.event for e in read_journal(journal_of(agent.ipc_root, run))]
                # Every journal event once, in order, as streamed (the final in its own place).
                shown = await page.locator("li.event").evaluate_all("items => items.map(i => i.dataset.type)")
                assert shown == [e.type for e in journal if not is_final(e)]
                assert run.run_id in await page.locator("h1").inner_text()
                assert "delivered" in await page.locator("#summary").inner_text()
                await shot(page, "run-finished")

                # Replayed from its journal after: a fresh page, the same events and one final.
                replay = await browser.new_page()
                await replay.goto(login.replace("/?token=", f"/runs/main/{run.run_id}?token="))
                await replay.locator("#live-status", has_text="finished").wait_for(timeout=30_000)
                assert await replay.locator("li.event").count() == len(shown)
                assert await replay.locator(".final").count() == 1

                # Usage: the turn's tokens on the chart (the same sum `agentlite usage` prints).
                [summed] = usage_summary(agent.store, timezone="UTC", by="agent", agent="main")
                tokens = sum(summed[k] for k in ("input_tokens", "output_tokens", "cached_input_tokens",
                                                 "cache_write_tokens"))  # fmt: skip
                assert tokens >= 1234 + 567
                await page.goto(login.replace("/?token=", "/usage?token="))
                bar = page.locator('#tokens-by-agent g.row[data-label="main"]')
                assert await bar.get_attribute("data-value") == str(tokens)
                assert f"{tokens:,}" in (await bar.text_content() or "")
                day_bar = page.locator("#tokens-by-day g.row").first
                assert await day_bar.get_attribute("data-value") == str(tokens)
                budget = page.locator("#tokens-by-day g.budget")
                assert await budget.get_attribute("data-value") == "5000"
                assert "budget main * daily" in (await budget.text_content() or "")
                await shot(page, "usage")
                await page.goto(login.replace("/?token=", "/usage?since=1h&token="))
                assert await bar.get_attribute("data-value") == str(tokens)  # this turn is within the hour
                bad = await page.goto(login.replace("/?token=", "/usage?since=lately&token="))
                assert bad is not None and bad.status == 400
                assert "since `lately`: use 7d, 24h, 30m" in await page.locator("main").inner_text()

                # Agents and groups: backend, the session the next turn resumes, last run.
                await page.goto(login.replace("/?token=", "/agents?token="))
                groups = page.locator("tr", has=page.locator("text=q:ops"))
                text = await groups.inner_text()
                assert run.session_id and run.session_id in text and "delivered" in text
                assert "codex" in await page.locator("main").inner_text()
                await shot(page, "agents")

                # Tasks: pause and resume through the page's forms.
                await page.goto(login.replace("/?token=", "/tasks?token="))
                row = page.locator("tr", has=page.locator(f"text={task.id}"))
                assert "active" in await row.inner_text() and "0 3 * * *" in await row.inner_text()
                await row.get_by_role("button", name=f"Pause task {task.id}").click()
                await page.wait_for_url("**/tasks")
                row = page.locator("tr", has=page.locator(f"text={task.id}"))
                await row.get_by_role("button", name=f"Resume task {task.id}").wait_for()
                assert agent.store.get_task(task.id).status == "paused"  # type: ignore[union-attr]
                await shot(page, "tasks-paused")
                await row.get_by_role("button", name=f"Resume task {task.id}").click()
                await page.wait_for_url("**/tasks")
                await (
                    page.locator("tr", has=page.locator(f"text={task.id}"))
                    .get_by_role("button", name=f"Pause task {task.id}")
                    .wait_for()
                )
                assert agent.store.get_task(task.id).status == "active"  # type: ignore[union-attr]

                # The Runs page filters as `agentlite runs` does (a plain form; a bad state is refused).
                await page.goto(login.replace("/?token=", "/runs?state=failed&token="))
                assert "No runs." in await page.locator("main").inner_text()
                await page.goto(login.replace("/?token=", "/runs?agent=main&state=delivered&token="))
                assert run.run_id in await page.locator("main").inner_text()
                await shot(page, "runs")
                refused = await page.goto(login.replace("/?token=", "/runs?state=lost&token="))
                assert refused is not None and refused.status == 400
                assert "state `lost` is not a run state" in await page.locator("main").inner_text()
