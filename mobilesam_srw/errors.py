"""The one exception type for errors a user can cause (bad paths, options, data)."""


class SrwError(Exception):
    """A user-facing error: its message is one line, printed by the CLI, which exits 2."""
