"""The environment a box is started with: the host sets these variables, the box side reads them.

One definition for both ends, standard library only (the in-box runner and MCP server import it).
"""

from __future__ import annotations

#: The runner's input folder (the host's follow-up messages and the close sentinel).
ENV_IPC_INPUT = "AGENTLITE_IPC_INPUT"
#: The group's folder inside the box (the agent's working directory).
ENV_WORKSPACE = "AGENTLITE_WORKSPACE"
#: ``1``: the runner ends after the first turn instead of waiting for follow-ups.
ENV_SINGLE_TURN = "AGENTLITE_SINGLE_TURN"
#: Where the runner also appends its frames (the run ledger's journal), as a guest path.
ENV_JOURNAL = "AGENTLITE_JOURNAL"
#: The runner input of an ACP adapter box, as JSON (read by :mod:`agentlite.guest.acp_launch`).
ENV_ACP_INPUT = "AGENTLITE_ACP_INPUT"
#: Who the in-box MCP server speaks for, and where it writes its IPC requests.
ENV_CHAT_JID = "AGENTLITE_CHAT_JID"
ENV_GROUP_FOLDER = "AGENTLITE_GROUP_FOLDER"
ENV_IS_MAIN = "AGENTLITE_IS_MAIN"
ENV_IPC_DIR = "AGENTLITE_IPC_DIR"
#: The host's actions server (a URL the guest can reach) and the box's bearer token for it.
ENV_ACTIONS_URL = "AGENTLITE_ACTIONS_URL"
ENV_ACTIONS_TOKEN = "AGENTLITE_ACTIONS_TOKEN"
#: The vendors' API-key variables, used when a backend names none of its own.
OPENAI_KEY_ENV = "OPENAI_API_KEY"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
