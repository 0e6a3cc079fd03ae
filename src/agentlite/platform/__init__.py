"""The platform: agents, groups, store, queue, scheduler, IPC, actions, ledger, usage, budgets."""
