"""The runner's side of the host <-> box wire format, standard library only.

The in-box runner starts once per box, so it must not pay for pydantic (about 150 ms of imports and
model building on a small machine): it writes each event as a plain dict through :func:`frame`, and
reads its input with :func:`agentlite.guest.runner._input.parse_input`. The host side
(:mod:`agentlite.run.protocol`) validates the same frames with its pydantic models and takes the frame
markers and the key-variable rule from here, so both ends share one definition.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from agentlite.core.box_env import ANTHROPIC_KEY_ENV, OPENAI_KEY_ENV

OUTPUT_START = "---AGENTLITE_OUTPUT_START---"
OUTPUT_END = "---AGENTLITE_OUTPUT_END---"
BACKEND_TYPES = ("codex", "claude_code", "acp")
#: The backend of an agent, a run or a config that names none (the SDK, ``agentlite.toml``, every
#: CLI command): codex, which the offline demo model answers with no key and no setup.
DEFAULT_BACKEND_TYPE: Literal["codex"] = "codex"

Event = dict[str, Any]


def default_key_env(backend_type: str, api_key_env: str | None) -> str:
    """The environment variable holding the backend's API key: the configured one, else the vendor's."""
    if api_key_env:
        return api_key_env
    return ANTHROPIC_KEY_ENV if backend_type == "claude_code" else OPENAI_KEY_ENV


def frame(event: Event) -> str:
    """The three lines that carry one event. None fields are left out, except a result's ``result``
    (the host's ResultEvent requires it, None meaning a turn that ended without text)."""
    shown = {k: v for k, v in event.items() if v is not None or k == "result"}
    body = json.dumps(shown, separators=(",", ":"), ensure_ascii=False)
    return f"{OUTPUT_START}\n{body}\n{OUTPUT_END}\n"


# -- the events the runner sends (the host's models in agentlite.run.protocol say what each field means)


def state_event(state: str, *, reason: str | None = None, session_id: str | None = None) -> Event:
    return {"type": "state", "state": state, "new_session_id": session_id, "reason": reason}


def result_event(result: str | None, session_id: str | None) -> Event:
    return {"type": "result", "result": result, "new_session_id": session_id}


def error_event(error: str, session_id: str | None = None) -> Event:
    return {"type": "error", "error": error, "new_session_id": session_id}


def sdk_message_event(sdk_type: str, sdk_subtype: str | None, message: Any) -> Event:
    return {"type": "sdk_message", "sdk_type": sdk_type, "sdk_subtype": sdk_subtype, "message": message}


def usage_event(
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    model: str | None = None,
    *,
    cache_write_tokens: int = 0,
    cost_usd: float | None = None,
    scope: str = "turn",
) -> Event:
    """``input_tokens`` are those not read from a cache; ``scope`` ``call`` is one model call of a
    turn still running (provisional), ``turn`` the turn's total, which replaces its calls."""
    return {"type": "usage", "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens, "model": model,
            "cache_write_tokens": cache_write_tokens, "cost_usd": cost_usd, "scope": scope}  # fmt: skip
