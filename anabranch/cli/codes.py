"""The exit codes, one meaning each (docs/architecture.md, rule 9)."""

EXIT_OK = 0
"""Every task delivered and complete."""
EXIT_USAGE = 2
"""Bad usage, a setup problem, input lines rejected (the rest still ran), or a file that cannot
be written (the message names the cause)."""
EXIT_CRASH = 3
"""Something unexpected: a bug. The traceback is printed."""
EXIT_PARTIAL = 4
"""Every task delivered, some with error records: a result, not a failure."""
EXIT_SIGNALLED = 128
"""Plus the signal's number: 130 after Ctrl-C (SIGINT), 143 after SIGTERM. The journal keeps
what the run finished, and the same command resumes it."""


class UsageError(Exception):
    """Bad usage the command itself finds: exit 2 with its message, as for the library's own
    errors (defined here, not in `errors`, so the commands load before pydantic does)."""
