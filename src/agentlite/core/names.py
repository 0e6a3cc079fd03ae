"""One validator per kind of name that becomes a path or an identity on the host.

Agent names, agent ids, group folders, box names and task ids arrive from the SDK, the CLI, a TOML
config, ``host --jsonl`` and a box's IPC files. Each one names a folder or file somewhere under the
platform's work folder, so every door calls the validator of its kind, and a refused name raises
:class:`InvalidName` (a :class:`ConfigError`: exit 2 on the CLI) *before* anything is created or
removed.

Every kind is an allowlist, which rules out by construction: the empty string, ``.`` and ``..``,
``/`` and ``\\``, NUL and every other control character, whitespace, a leading ``-`` (read as an
option by tools) or ``.`` (hidden, and the start of ``..``), and anything longer than the kind's
limit. :func:`child_path` adds the last check: the joined path must stay directly inside its parent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from agentlite.core.errors import ConfigError


class InvalidName(ConfigError):
    """A name that must not become a path; ``kind`` says which rule refused it."""

    def __init__(self, kind: str, value: object, rule: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"{kind} `{shown(value)}` {rule}")


def shown(value: object, limit: int = 80) -> str:
    """``value`` safe to print on one line: control characters escaped, long values cut."""
    if not isinstance(value, str):
        return repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} characters)"


@dataclass(frozen=True)
class NameRule:
    """One kind of name: an allowlisted first character, allowlisted others, and a length limit."""

    kind: str
    pattern: re.Pattern[str]
    max_length: int
    description: str
    reserved: frozenset[str] = frozenset()

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise InvalidName(self.kind, value, "must be a string")
        if not self.pattern.fullmatch(value) or len(value) > self.max_length:
            raise InvalidName(self.kind, value, f"{self.description} (1 to {self.max_length} characters)")
        if value.lower() in self.reserved:
            raise InvalidName(self.kind, value, "is reserved")
        return value

    def accepts(self, value: object) -> bool:
        """:meth:`check` as a predicate, for a door that skips what it refuses."""
        try:
            self.check(value)
        except InvalidName:
            return False
        return True


def _rule(kind: str, first: str, rest: str, max_length: int, description: str,
          reserved: frozenset[str] = frozenset()) -> NameRule:  # fmt: skip
    # ``\Z``-anchored by fullmatch; the classes contain no whitespace, slash or control character.
    pattern = re.compile(f"[{first}][{rest}]{{0,{max_length - 1}}}", re.ASCII)
    return NameRule(kind, pattern, max_length, description, reserved)


AGENT_NAME = _rule(
    "agent name", "A-Za-z0-9", "A-Za-z0-9_.-", 64,
    "may use only letters, digits, `_`, `.` and `-`, starting with a letter or digit",
)  # fmt: skip
#: Ids name boxes and ownership records: 8 random characters when the registry draws them, or a
#: caller's own (``cli``, ``host``).
AGENT_ID = _rule(
    "agent id", "A-Za-z0-9", "A-Za-z0-9_-", 64,
    "may use only letters, digits, `_` and `-`, starting with a letter or digit",
)  # fmt: skip
GROUP_FOLDER = _rule(
    "group folder", "A-Za-z0-9", "A-Za-z0-9_-", 64,
    "may use only letters, digits, `_` and `-`, starting with a letter or digit",
    # `global` is the shared memory folder every group reads; `errors` and `input` are folders of
    # the host's own beside the groups' IPC folders (a group so named would read other groups'
    # quarantined requests, and its own requests would never be read).
    reserved=frozenset({"global", "errors", "input"}),
)  # fmt: skip
#: ``agentlite-<agent id>-<group>-<epoch ms>`` fits: 10 + 64 + 1 + 64 + 1 + 13 < 200.
BOX_NAME = _rule(
    "box name", "A-Za-z0-9_", "A-Za-z0-9_.-", 200,
    "may use only letters, digits, `_`, `.` and `-`, starting with a letter, digit or `_`",
)  # fmt: skip
TASK_ID = _rule(
    "task id", "A-Za-z0-9", "A-Za-z0-9_.-", 128,
    "may use only letters, digits, `_`, `.` and `-`, starting with a letter or digit",
)  # fmt: skip


def check_agent_name(name: object) -> str:
    return AGENT_NAME.check(name)


def check_agent_id(agent_id: object) -> str:
    return AGENT_ID.check(agent_id)


def check_group_folder(folder: object) -> str:
    """``folder`` if it may name a directory under ``groups/`` (never ``global``), else raise.

    >>> check_group_folder("family-chat")
    'family-chat'
    """
    return GROUP_FOLDER.check(folder)


def valid_group_folder(folder: object) -> bool:
    """Whether :func:`check_group_folder` accepts ``folder`` (the IPC watcher and the MCP server
    skip what it refuses)."""
    return GROUP_FOLDER.accepts(folder)


def check_box_name(name: object) -> str:
    return BOX_NAME.check(name)


def check_task_id(task_id: object) -> str:
    return TASK_ID.check(task_id)


def child_path(parent: Path, name: str, rule: NameRule) -> Path:
    """``parent / name`` after ``rule`` accepted ``name``, refusing a result outside ``parent``.

    The rules already make that impossible; this is the belt to their braces, and it resolves
    ``parent`` itself so a symlinked parent cannot move the child elsewhere unnoticed.
    """
    rule.check(name)
    base = Path(os.path.realpath(parent))
    child = Path(os.path.realpath(base / name))
    if child.parent != base:
        raise InvalidName(rule.kind, name, f"would leave its folder `{base}`")
    return child
