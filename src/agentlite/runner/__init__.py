"""The program inside a box: ``python -m agentlite.runner`` (see :mod:`agentlite.runner._loop`)."""
