"""HiveMind command line, embedded server and Python client."""

import edge  # noqa: F401  # first: it loads nats-py and structlog without extras we never use
