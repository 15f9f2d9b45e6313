"""The one error class of hhcl: a user mistake with a message that names the file, the value and the fix."""


class HHCLError(Exception):
    """A problem the user can fix. The CLI prints ``str(error)`` on one line and exits 2."""
