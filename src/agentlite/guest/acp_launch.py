"""Box side of a boxed ACP agent: configure the adapter for the run's model, then become it.

``python -m agentlite.guest.acp_launch`` runs inside the box with the runner input (JSON) in
``$AGENTLITE_ACP_INPUT``. It writes the same codex config and sets the same model environment as
the runner's ``acp`` backend, then ``exec``s the ACP adapter named in ``backend.command``, so the
adapter's stdio is this process's: the host speaks ACP to it directly, with nothing in between.
Standard library only, like the runner (this runs in the box, where pydantic is not imported).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agentlite.core.box_env import ENV_ACP_INPUT, ENV_WORKSPACE
from agentlite.guest.backends.base import BackendContext
from agentlite.guest.runner._input import InputError, parse_input

INPUT_ENV = ENV_ACP_INPUT


def main() -> int:
    try:
        run_input = parse_input(os.environ.get(INPUT_ENV, "").encode())
    except InputError as exc:
        print(f"[agentlite-acp] bad input: {exc}", file=sys.stderr)
        return 2
    command = run_input.backend.command or []
    if not command:
        print("[agentlite-acp] the input names no ACP adapter command", file=sys.stderr)
        return 2
    workspace = Path(os.environ.get(ENV_WORKSPACE) or os.getcwd())
    home = Path(os.environ.get("HOME", "/home/agent"))
    context = BackendContext(run_input, lambda _event: None, workspace, home)
    context.write_codex_config()  # codex-acp reads the codex config; other adapters ignore it
    env = {k: v for k, v in os.environ.items() if k != INPUT_ENV}
    env.update(context.codex_env())
    env.update(context.claude_env())
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"[agentlite-acp] could not start `{command[0]}`: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    raise SystemExit(main())
