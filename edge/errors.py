"""Errors raised at the NATS edge and above, which the command line turns into one clear
line and an exit code."""

from __future__ import annotations


class HiveError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""

    exit_code = 1


class Unreachable(HiveError):
    """The NATS server (or the coordinator behind it) did not answer."""

    exit_code = 2


class NotFound(HiveError):
    exit_code = 1


class Denied(HiveError):
    """The server refused what this user asked to publish: their role may not."""

    exit_code = 2


class Invalid(HiveError):
    """Input refused before anything was written (a name that cannot be a subject token)."""

    exit_code = 2


class BadCredentials(HiveError):
    """A credentials or CA file that cannot be used (checked before connecting)."""

    exit_code = 2
