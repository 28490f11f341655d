"""The coordinator: projections of the event log, the scheduler and the policies."""
