"""HiveMind command line, embedded server and Python client."""
