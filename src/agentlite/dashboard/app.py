"""The dashboard's web app (Starlette): the pages, their live streams, and the two actions (remove a
box, pause or resume a task). Every route sits behind :class:`~agentlite.dashboard.auth.TokenGate`.

Live updates are server-sent events: a list page's stream re-sends its table when it changed (it
looks once per heartbeat, so a dead owner shows within one); a run's stream sends each journal
event once (its id is the journal offset, so a reconnecting browser resumes where it was), the
final, and ``end`` once the ledger says the run is over.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from agentlite.box.ownership import heartbeat_interval
from agentlite.core.clock import parse_since
from agentlite.core.errors import AgentliteError
from agentlite.dashboard import pages
from agentlite.dashboard.auth import TokenGate, form_key
from agentlite.dashboard.html import SCRIPT, STYLE, esc, live, page
from agentlite.dashboard.source import FINISHED_STATES, DashboardSource, RunFilter
from agentlite.run.journal import is_final, read_journal

log = logging.getLogger("agentlite.dashboard")

#: How often a run's stream looks at its journal (it is a plain file).
JOURNAL_POLL = 0.2


class Dashboard:
    """The app's state: where data comes from, the token, and a stop signal for open streams."""

    def __init__(self, source: DashboardSource, token: str, *, refresh: float | None = None) -> None:
        self.source = source
        self.token = token
        self.form_key = form_key(token)
        #: Seconds between looks of a list page's stream: one heartbeat (at most 1 s).
        self.refresh = refresh if refresh is not None else min(1.0, heartbeat_interval())
        self.stopping = asyncio.Event()
        self._fragments: dict[str, Callable[[Mapping[str, str]], Awaitable[str]]] = {
            "boxes": self._boxes, "agents": self._agents, "runs": self._runs, "tasks": self._tasks,
            "usage": self._usage,
        }  # fmt: skip
        self._titles = {"boxes": "Boxes", "agents": "Agents and groups", "runs": "Runs", "tasks": "Tasks",
                        "usage": "Usage and budgets"}  # fmt: skip

    # -- fragments --------------------------------------------------------------------------------

    async def _boxes(self, query: Mapping[str, str]) -> str:
        return pages.boxes_fragment(await self.source.boxes())

    async def _agents(self, query: Mapping[str, str]) -> str:
        return pages.agents_fragment(self.source.agent_rows())

    async def _runs(self, query: Mapping[str, str]) -> str:
        wanted = RunFilter.of(query)
        return pages.runs_fragment(
            self.source.runs(agent=wanted.agent, group=wanted.group, state=wanted.state)
        )

    async def _tasks(self, query: Mapping[str, str]) -> str:
        return pages.tasks_fragment(self.source.tasks(), self.form_key)

    async def _usage(self, query: Mapping[str, str]) -> str:
        since = parse_since(query.get("since") or None, what="since")
        return pages.usage_fragment(self.source.usage(since))

    # -- list pages and their streams -------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        name = request.url.path.strip("/")
        query = request.query_params
        fragment = await self._fragments[name](query)
        stream = f"/stream/{name}" + (f"?{request.url.query}" if request.url.query else "")
        above = ""
        if name == "runs":
            above = pages.runs_filter(RunFilter.of(query), [a.name for a in self.source.agents()])
        elif name == "usage":
            above = pages.usage_filter(query.get("since", ""))
        return HTMLResponse(page(self._titles[name], above + live(stream, fragment), current=f"/{name}"))

    async def list_stream(self, request: Request) -> Response:
        name = request.path_params["page"]
        build = self._fragments.get(name)
        if build is None:
            return PlainTextResponse(f"no stream `{name}`", status_code=404)
        query = request.query_params
        await build(query)  # a bad filter is refused before the stream starts

        async def changes() -> AsyncIterator[str]:
            last = None
            while not self.stopping.is_set():
                try:
                    fragment = await build(query)
                except AgentliteError as exc:
                    fragment = f'<p role="alert">Could not read: {esc(exc)}</p>'
                if fragment != last:
                    last = fragment
                    yield _sse("fragment", fragment)
                if await self._wait(request, self.refresh):
                    return

        return _stream(changes())

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopping; True when the stream should end."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        except TimeoutError:
            return await request.is_disconnected()

    # -- a run ------------------------------------------------------------------------------------

    async def run_page(self, request: Request) -> Response:
        agent, run_id = request.path_params["agent"], request.path_params["run_id"]
        found = self.source.run(agent, run_id)
        if found is None:
            return HTMLResponse(page("Run not found", f"<p>No run <code>{esc(run_id)}</code> of agent "
                                     f"{esc(agent)}.</p>", current="/runs"), status_code=404)  # fmt: skip
        record, journal = found
        entries = read_journal(journal)
        offset = entries[-1].end if entries else 0
        final_event = next((e.event for e in reversed(entries) if is_final(e.event)), None)
        events = "".join(pages.event_item(e.event) for e in entries if not is_final(e.event))
        stream = f"/stream/run/{esc(agent)}/{esc(run_id)}?offset={offset}"
        body = (
            f'<div id="summary">{pages.run_summary(agent, record)}</div>'
            f'<h2>Final</h2><section id="final" aria-live="polite">{pages.final_block(record, final_event)}</section>'
            f'<h2>Events</h2><ol id="events" class="events">{events}</ol>'
            + live(stream, "", element_id="run-stream")
            + '<p><a href="/runs">All runs</a></p>'
        )
        return HTMLResponse(page(f"Run {run_id}", body, current="/runs"))

    async def run_stream(self, request: Request) -> Response:
        agent, run_id = request.path_params["agent"], request.path_params["run_id"]
        resume = request.headers.get("last-event-id") or request.query_params.get("offset") or "0"
        offset = int(resume) if resume.isdigit() else 0
        if self.source.run(agent, run_id) is None:
            return PlainTextResponse(f"no run `{run_id}` of agent `{agent}`", status_code=404)

        async def follow() -> AsyncIterator[str]:
            nonlocal offset
            summary = None
            while not self.stopping.is_set():
                found = self.source.run(agent, run_id)
                if found is None:
                    yield _sse("end", "")
                    return
                record, journal = found
                fresh = read_journal(journal, offset)
                for entry in fresh:
                    offset = entry.end
                    if is_final(entry.event):
                        yield _sse("final", pages.final_block(record, entry.event), event_id=offset)
                    else:
                        yield _sse("event", pages.event_item(entry.event), event_id=offset)
                current = pages.run_summary(agent, record)
                if current != summary:
                    summary = current
                    yield _sse("summary", current, event_id=offset)
                if record.state in FINISHED_STATES and not fresh:
                    yield _sse("final", pages.final_block(record), event_id=offset)
                    yield _sse("end", "", event_id=offset)
                    return
                if await self._wait(request, JOURNAL_POLL):
                    return

        return _stream(follow())

    # -- actions ----------------------------------------------------------------------------------

    async def remove_form(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        rows = [r for r in await self.source.boxes() if r["name"] == name]
        plan = [d.as_json() for d in await self.source.cleanup_plan(name)] if name else []
        body = pages.remove_confirm(rows[0] if rows else None, name, plan, self.form_key)
        return HTMLResponse(page("Remove a box?", body, current="/boxes"))

    async def remove(self, request: Request) -> Response:
        form = await request.form()
        refused = self._check_form(request, form)
        if refused is not None:
            return refused
        name = str(form.get("name", ""))
        decisions = await self.source.remove_box(name, include_live=form.get("include_live") == "1")
        log.info("dashboard remove box=%s decisions=%s", name, [(d.action, d.reason) for d in decisions])
        body = pages.remove_result([d.as_json() for d in decisions], decisions.error)
        return HTMLResponse(page("Remove a box", body, current="/boxes"))

    async def change_task(self, request: Request) -> Response:
        form = await request.form()
        refused = self._check_form(request, form)
        if refused is not None:
            return refused
        try:
            task = await self.source.change_task(str(form.get("agent", "")), str(form.get("task", "")),
                                                 str(form.get("action", "")))  # fmt: skip
        except AgentliteError as exc:
            return HTMLResponse(page("Task not changed", f'<p role="alert">{esc(exc)}</p>'
                                     '<p><a href="/tasks">Back to tasks</a></p>', current="/tasks"),
                                status_code=400)  # fmt: skip
        if task is None:
            return HTMLResponse(page("Task not changed", '<p role="alert">No such task.</p>', current="/tasks"),
                                status_code=404)  # fmt: skip
        return RedirectResponse("/tasks", status_code=303)

    def _check_form(self, request: Request, form: Any) -> Response | None:
        if not request.scope.get("state", {}).get("needs_form_key", True):
            return None
        given = str(form.get("form_key", ""))
        if hmac.compare_digest(given.encode(), self.form_key.encode()):
            return None
        return PlainTextResponse("403: this form did not come from this dashboard", status_code=403)


def _sse(event: str, data: str, *, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return "\n".join(lines) + "\n\n"


def _stream(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})  # fmt: skip


def create_app(dashboard: Dashboard) -> TokenGate:
    """The ASGI app: every route behind the token."""

    async def home(request: Request) -> Response:
        return RedirectResponse("/boxes", status_code=303)

    async def css(request: Request) -> Response:
        return Response(STYLE, media_type="text/css")

    async def js(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    routes = [
        Route("/", home),
        Route("/static/dashboard.css", css),
        Route("/static/dashboard.js", js),
        *(Route(f"/{name}", dashboard.list_page) for name in ("boxes", "agents", "runs", "tasks", "usage")),
        Route("/boxes/remove", dashboard.remove_form, methods=["GET"]),
        Route("/boxes/remove", dashboard.remove, methods=["POST"]),
        Route("/tasks/change", dashboard.change_task, methods=["POST"]),
        Route("/runs/{agent}/{run_id}", dashboard.run_page),
        Route("/stream/run/{agent}/{run_id}", dashboard.run_stream),
        Route("/stream/{page}", dashboard.list_stream),
    ]
    app = Starlette(routes=routes, exception_handlers={AgentliteError: _agentlite_error})
    return TokenGate(app, dashboard.token)


async def _agentlite_error(request: Request, exc: Exception) -> Response:
    return HTMLResponse(page("Error", f'<p role="alert">{esc(exc)}</p>'), status_code=400)
