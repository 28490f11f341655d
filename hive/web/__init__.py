"""``hive web``: the dashboard and its REST API, an aiohttp service of its own.

It reads through the same hiveapi verbs as the command line (``hive.client.HiveClient``),
follows the log for live updates (server-sent events), and acts over NATS with the
credential of the person logged in, so permissions and attribution stay the server's.
"""
