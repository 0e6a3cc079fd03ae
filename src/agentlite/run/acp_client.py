"""The parts of an ACP client that every client agentlite holds answers the same way.

The SDK calls these on any client object it is given; ours offer no extension methods and do
nothing when the connection comes up, and most keep the agent off the host's files.
"""

from __future__ import annotations

from typing import Any

import acp


class AcpClientBase:
    """No extension methods or notifications, nothing to do on connect."""

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None


class NoHostFsClient(AcpClientBase):
    """A client that does not serve the agent's fs requests: the agent has its own box's files."""

    async def write_text_file(self, *args: Any, **kwargs: Any) -> Any:
        raise acp.RequestError.method_not_found("fs/write_text_file")

    async def read_text_file(self, *args: Any, **kwargs: Any) -> Any:
        raise acp.RequestError.method_not_found("fs/read_text_file")
