"""Structured logs (logfmt: ``key=value`` pairs) to stderr, never mixed into machine output."""

from __future__ import annotations

import logging
import os
import sys
import time

from agentlite.core.config import ENV_LOG_LEVEL


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', "'")
        line = f'ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def configure_logging(level: str | None = None) -> None:
    """Send AgentLite's logs to stderr at ``level`` (else ``$AGENTLITE_LOG_LEVEL``, else warning)."""
    name = (level or os.environ.get(ENV_LOG_LEVEL) or "warning").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    logger = logging.getLogger("agentlite")
    logger.handlers[:] = [handler]
    logger.setLevel(getattr(logging, name, logging.WARNING))
    logger.propagate = False
