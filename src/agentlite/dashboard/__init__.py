"""A web dashboard for operators: boxes with their owners and verdicts, agents and groups, runs as
they stream, tasks, usage and budgets (``agentlite dashboard``, ``agentlite serve --dashboard``)."""
