"""The host <-> box runner wire format: the runner's input, its events, and their framing.

The runner reads one :class:`RunnerInput` JSON document on stdin and writes each event as three
lines on stdout: ``---AGENTLITE_OUTPUT_START---``, one line of compact JSON, and
``---AGENTLITE_OUTPUT_END---``. Anything else on stdout (a library printing) is ignored by the host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agentlite.run.wire import (  # the runner writes frames without pydantic: one set of markers
    BACKEND_TYPES as BACKEND_TYPES,
    DEFAULT_BACKEND_TYPE as DEFAULT_BACKEND_TYPE,
    OUTPUT_END as OUTPUT_END,
    OUTPUT_START as OUTPUT_START,
    default_key_env,
)

log = logging.getLogger("agentlite.protocol")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Model):
    """Which agent drives a run and how it reaches its model."""

    # The field docstrings are the descriptions in docs/config.md (agentlite.platform.config_doc).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    type: Literal["codex", "claude_code", "acp"] = DEFAULT_BACKEND_TYPE
    """`codex` (Codex CLI), `claude_code` (Claude Code) or `acp` (any Agent Client Protocol agent)."""
    model: str | None = None
    """Model name passed to the CLI; blank means the CLI's default."""
    base_url: str | None = None
    """Model endpoint (a proxy, a self-hosted model, the offline demo model); unset means the vendor's."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (unset: `OPENAI_API_KEY` for codex, `ANTHROPIC_API_KEY` for claude_code)."""
    command: list[str] | None = None
    """ACP only: the agent command line, for example `["codex-acp"]`."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed model request inside the CLI (0 to 10: never retry forever)."""

    @field_validator("model")
    @classmethod
    def _trim_model(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None

    def key_env(self) -> str:
        return default_key_env(self.type, self.api_key_env)


class McpServer(_Model):
    command: str
    args: list[str] = []
    env: dict[str, str] = {}


class ActionsAuth(_Model):
    url: str
    token: str


class RunnerInput(_Model):
    """Everything the in-box runner needs for a run; sent as JSON on its stdin."""

    prompt: str
    group_folder: str
    chat_id: str
    is_main: bool
    session_id: str | None = None
    is_scheduled_task: bool = False
    assistant_name: str | None = None
    backend: BackendConfig = BackendConfig()
    mcp_servers: dict[str, McpServer] = {}
    actions_auth: ActionsAuth | None = None


# -- events ---------------------------------------------------------------------------------------


class StateEvent(_Model):
    type: Literal["state"] = "state"
    state: Literal["active", "idle", "stopped"]
    new_session_id: str | None = None
    #: query_started / awaiting_input (runner); exit / error_exit / timeout / idle_timeout (host).
    reason: str | None = None
    exit_code: int | None = None


class ResultEvent(_Model):
    type: Literal["result"] = "result"
    result: str | None
    new_session_id: str | None = None


class ErrorEvent(_Model):
    type: Literal["error"] = "error"
    error: str
    new_session_id: str | None = None


class SdkMessageEvent(_Model):
    """A raw backend event, passed through untouched in ``message``."""

    type: Literal["sdk_message"] = "sdk_message"
    sdk_type: str
    sdk_subtype: str | None = None
    message: Any


class UsageEvent(_Model):
    """Tokens of one model call (``scope`` ``call``, provisional) or of a whole turn (``turn``: it
    replaces the turn's calls), where the backend reports them. ``input_tokens`` are the ones not
    read from a cache; ``cost_usd`` is set only where the backend itself reports the cost."""

    type: Literal["usage"] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    model: str | None = None
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    scope: Literal["call", "turn"] = "turn"


Event = Annotated[
    StateEvent | ResultEvent | ErrorEvent | SdkMessageEvent | UsageEvent, Field(discriminator="type")
]
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes) -> Event:
    return _event_adapter.validate_json(data)


def encode_frame(event: BaseModel) -> str:
    """The three lines that carry one event on the runner's stdout."""
    body = event.model_dump_json(exclude_none=True)
    return f"{OUTPUT_START}\n{body}\n{OUTPUT_END}\n"


def session_id_of(event: Event) -> str | None:
    """The session id an event carries: only state, result and error events count."""
    if isinstance(event, StateEvent | ResultEvent | ErrorEvent):
        return event.new_session_id
    return None


class FrameParser:
    """Pulls complete START/JSON/END frames out of stdout lines as they arrive.

    An incomplete frame waits for more lines; a frame that is not a valid event is logged and
    skipped; lines outside frames are ignored.
    """

    def __init__(self) -> None:
        self._inside = False
        self._body: list[str] = []
        self.skipped = 0

    def feed(self, line: str) -> Iterator[Event]:
        text = line.rstrip("\r\n")
        if not self._inside:
            if text == OUTPUT_START:
                self._inside, self._body = True, []
            return
        if text == OUTPUT_START:  # a frame was cut short: start over with the new one
            self.skipped += 1
            log.warning("frame without end marker skipped")
            self._body = []
            return
        if text != OUTPUT_END:
            self._body.append(text)
            return
        self._inside = False
        body = "\n".join(self._body)
        try:
            yield parse_event(body)
        except (ValidationError, json.JSONDecodeError, ValueError) as exc:
            self.skipped += 1
            log.warning("frame skipped, not a valid event: %s body=%r", str(exc).splitlines()[0], body[:200])
