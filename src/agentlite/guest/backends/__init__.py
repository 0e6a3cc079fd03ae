"""Backends: the agent CLIs a runner drives inside a box (codex, claude_code, acp)."""
