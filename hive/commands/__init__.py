"""Command groups beyond the core ones in ``hive.cli``; each module registers on ``app``."""
