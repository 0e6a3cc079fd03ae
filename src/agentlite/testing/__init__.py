"""Test helpers that also ship with the product: the chaos harnesses and, re-exported for tests, the
built-in offline model server (which lives in :mod:`agentlite.offline.model_server`)."""

from agentlite.offline.model_server import SCENARIOS, ModelServer, RecordedRequest, ScriptedUsage

__all__ = ["SCENARIOS", "ModelServer", "RecordedRequest", "ScriptedUsage"]
