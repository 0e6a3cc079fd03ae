"""Which backend class serves which backend type: the one place that names the implementations.

:mod:`agentlite.guest.backends.base` holds only what the backends share (it imports none of them); the
runner asks this registry for the backend of a run. Implementations are imported on first use, so
a codex run never imports the ACP backend.
"""

from __future__ import annotations

import importlib

from agentlite.core.errors import UnknownBackend
from agentlite.guest.backends.base import Backend, BackendContext

#: Backend type -> ``module:class`` of its implementation.
BACKENDS = {
    "codex": "agentlite.guest.backends.codex:CodexBackend",
    "claude_code": "agentlite.guest.backends.claude_code:ClaudeCodeBackend",
    "acp": "agentlite.guest.backends.acp:AcpBackend",
}


def make_backend(context: BackendContext) -> Backend:
    """The backend for ``context.config.type``; unknown names list the valid ones."""
    kind = context.config.type
    target = BACKENDS.get(kind)
    if target is None:
        raise UnknownBackend(kind, tuple(BACKENDS))
    module, _, name = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), name)(context)
    return backend
