"""Any Agent Client Protocol agent over stdio, through the ``agent-client-protocol`` package.

The agent process and its session live across the turns of a run, on this backend's own event
loop (the ACP client library is asyncio-based; the runner around it is not). ``session/update``
notifications stream out as ``sdk_message`` events; the turn's agent text is sent as the single
result once the ``session/prompt`` response (with its stop reason) has arrived. Permission requests
are allowed: inside a box, the box is the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import acp
from acp import schema

from agentlite.core.errors import ConfigError
from agentlite.guest.backends.base import BackendContext, TurnFailed
from agentlite.run.acp_client import NoHostFsClient
from agentlite.run.wire import result_event, sdk_message_event, state_event, usage_event

# Session modes that let an agent run tools without asking, most permissive first. The box is
# the isolation boundary, so the agent's own sandbox only gets in the way.
_PERMISSIVE_MODES = ("full-access", "bypassPermissions", "auto")


def _is_adapter_notice(text: str) -> bool:
    # codex-acp 0.16 sends codex's "unknown model metadata" warning as agent text (agent-clis.md).
    return text.startswith("Model metadata for `") and "Defaulting to fallback metadata" in text


class _Client(NoHostFsClient):
    """Our side of the ACP connection: collects the turn's text and passes updates on."""

    def __init__(self, backend: AcpBackend) -> None:
        self.backend = backend
        self.text: list[str] = []
        self.cost_usd: float | None = None

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        data = update.model_dump(by_alias=True, mode="json", exclude_none=True)
        kind = data.get("sessionUpdate")
        self.backend.ctx.emit(sdk_message_event("session_update", kind, data))
        cost = data.get("cost") if kind == "usage_update" else None
        if (
            isinstance(cost, dict)
            and cost.get("currency") == "USD"
            and isinstance(cost.get("amount"), int | float)
        ):
            self.cost_usd = float(cost["amount"])  # the session's running cost, as the agent reports it
        if isinstance(update, schema.ToolCallStart):
            self.text = []  # text before a tool call was progress; the result is what follows the last one
        elif (
            isinstance(update, schema.AgentMessageChunk)
            and isinstance(update.content, schema.TextContentBlock)
            and not _is_adapter_notice(update.content.text)
        ):
            self.text.append(update.content.text)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> Any:
        allow = next((o for o in options if o.kind in ("allow_always", "allow_once")), None)
        if allow is None:
            return acp.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))
        return acp.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=allow.option_id)
        )


class AcpBackend:
    def __init__(self, context: BackendContext) -> None:
        self.ctx = context
        if not context.config.command:
            raise ConfigError("the acp backend needs `command` (the agent's command line)")
        self._loop = asyncio.Runner()
        self._stack = contextlib.AsyncExitStack()
        self._client = _Client(self)
        self._conn: Any = None
        self._session: str | None = None
        context.write_codex_config()  # ACP adapters for codex read the same config

    def _mcp_servers(self) -> list[schema.McpServerStdio]:
        return [
            schema.McpServerStdio(name=name, command=s.command, args=s.args,
                                  env=[schema.EnvVariable(name=k, value=v) for k, v in s.env.items()])
            for name, s in sorted(self.ctx.input.mcp_servers.items())
        ]  # fmt: skip

    async def _connect(self, session_id: str | None) -> None:
        command = self.ctx.config.command or []
        env = {**os.environ, **self.ctx.codex_env(), **self.ctx.claude_env()}
        self._conn, _proc = await self._stack.enter_async_context(
            acp.spawn_agent_process(
                self._client, command[0], *command[1:], env=env, cwd=str(self.ctx.workspace)
            )
        )
        init = await self._conn.initialize(protocol_version=acp.PROTOCOL_VERSION,
                                           client_capabilities=schema.ClientCapabilities())  # fmt: skip
        can_load = bool(getattr(init.agent_capabilities, "load_session", False))
        cwd = str(self.ctx.workspace)
        if session_id and can_load:
            response = await self._conn.load_session(
                cwd=cwd, session_id=session_id, mcp_servers=self._mcp_servers()
            )
            self._session = session_id
        else:
            response = await self._conn.new_session(cwd=cwd, mcp_servers=self._mcp_servers())
            self._session = response.session_id
        modes = getattr(response, "modes", None)
        available = [m.id for m in modes.available_modes] if modes else []
        mode = next((m for m in _PERMISSIVE_MODES if m in available), None)
        if mode is not None:
            await self._conn.set_session_mode(session_id=self._session, mode_id=mode)

    def run_turn(self, prompt: str, session_id: str | None) -> str | None:
        return self._loop.run(self._run_turn(prompt, session_id))

    def close(self) -> None:
        try:
            self._loop.run(self._aclose())
        finally:
            self._loop.close()

    async def _run_turn(self, prompt: str, session_id: str | None) -> str | None:
        self.ctx.emit(state_event("active", reason="query_started", session_id=session_id))
        try:
            if self._conn is None:
                await self._connect(session_id)
            self._client.text = []
            cost_before = self._client.cost_usd
            response = await self._conn.prompt(session_id=self._session, prompt=[acp.text_block(prompt)])
        except acp.RequestError as exc:
            raise TurnFailed(f"ACP agent failed: {exc} {getattr(exc, 'data', '') or ''}".strip()) from exc
        except (OSError, ConnectionError, EOFError) as exc:
            raise TurnFailed(f"ACP agent `{self.ctx.config.command}` failed: {exc}") from exc
        data = response.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.ctx.emit(sdk_message_event("prompt_response", data.get("stopReason"), data))
        if response.usage is not None:
            usage = response.usage
            cached = usage.cached_read_tokens or 0
            # The agent reports the session's running cost: this turn's is the difference.
            cost = self._client.cost_usd
            if cost is not None and cost_before is not None:
                cost = max(0.0, cost - cost_before)
            self.ctx.emit(usage_event(max(0, usage.input_tokens - cached), usage.output_tokens, cached,
                                      self.ctx.config.model, cache_write_tokens=usage.cached_write_tokens or 0,
                                      cost_usd=cost))  # fmt: skip
        if response.stop_reason not in ("end_turn", "max_tokens", "max_turn_requests"):
            raise TurnFailed(f"ACP agent stopped the turn: {response.stop_reason}")
        text = "".join(self._client.text)
        self.ctx.emit(result_event(text or None, self._session))
        return self._session

    async def _aclose(self) -> None:
        await self._stack.aclose()
        self._conn = None
