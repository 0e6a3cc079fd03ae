"""The program inside a box: ``python -m agentlite.guest.runner`` (see :mod:`agentlite.guest.runner._loop`)."""
