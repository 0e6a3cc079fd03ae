"""``docs/config.md``, generated from the models that read ``agentlite.toml``.

The keys, types, defaults and descriptions come from :class:`agentlite.platform.service.ServiceConfig`
and the models under it (each field's docstring is its description), so the page cannot drift from
what ``agentlite serve`` accepts: a test compares the file with :func:`render_config_doc`.

    python -m agentlite.platform.config_doc > docs/config.md
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentlite.platform.service import ENV_OVERRIDES, AgentConfig, ChannelConfig, GroupConfig, ServiceConfig
from agentlite.run.protocol import BackendConfig

#: Each section of the page: its TOML heading and the model it documents, in reading order.
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Top level", ServiceConfig),
    ("`[[agents]]`", AgentConfig),
    ("`backend` of an agent (an inline table)", BackendConfig),
    ("`[[agents.channels]]`", ChannelConfig),
    ("`[[agents.groups]]`", GroupConfig),
)

_HEADER = """\
# `agentlite.toml`

<!-- Generated from the config models by `python -m agentlite.platform.config_doc > docs/config.md`;
     edit the field docstrings in the source, not this file (a test checks the two agree). -->

`agentlite serve --config agentlite.toml` reads this file. Unknown keys are refused, and a bad file
is refused before anything starts, with one error naming the file and the key.

```toml
workdir = "./agentlite-data"
timezone = "Europe/Berlin"

[[agents]]
name = "main"
backend = { type = "codex", model = "gpt-5" }

[[agents.channels]]
type = "telegram"
token_env = "TELEGRAM_BOT_TOKEN"

[[agents.groups]]
jid = "tg:123456"
name = "Me"
folder = "main"
is_main = true
```
"""


def type_name(annotation: Any) -> str:
    """A short, TOML-minded name of a field's type: ``"a" | "b"``, ``list of string``, ``table``."""
    origin = get_origin(annotation)
    if annotation is type(None):
        return "none"
    if origin is Literal:
        return " \\| ".join(f'`"{value}"`' for value in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        named = [type_name(arg) for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(named)
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return f"list of {type_name(item)}"
    if origin is dict or annotation is dict:
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, "any")


def default_text(field: FieldInfo) -> str:
    """The default as TOML would spell it; "required" when there is none."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list) and not value:
        return "`[]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_section(title: str, model: type[BaseModel]) -> str:
    lines = [f"## {title}", ""]
    if model.__doc__:
        lines += [model.__doc__.strip().splitlines()[0], ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        meaning = _cell(field.description or "")
        lines.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | {meaning} |")
    return "\n".join(lines) + "\n"


def render_config_doc() -> str:
    """The whole page."""
    parts = [_HEADER]
    parts += [render_section(title, model) for title, model in SECTIONS]
    env = ["## Environment overrides", "", "Set, these win over the file's values.", "",
           "| variable | key | value |", "|---|---|---|"]  # fmt: skip
    for variable, (key, _convert, what) in ENV_OVERRIDES.items():
        env.append(f"| `{variable}` | `{key}` | {what} |")
    parts.append("\n".join(env) + "\n")
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render_config_doc())


if __name__ == "__main__":
    main()
