"""What runs inside a box: the runner, the backends and the MCP server."""
