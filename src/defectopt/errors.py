"""The one exception type for problems a user can cause.

The CLI turns a `DefectoptError` into a one-line message on stderr and exit code 2.
Anything else escaping a command is a bug and may show a traceback.
"""


class DefectoptError(Exception):
    """A user-facing error carrying a one-line message."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: messages are printed verbatim after "error: ".
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)
