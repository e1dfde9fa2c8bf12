"""One exception type for everything a user can fix: its message is a single line saying what and what to do."""


class BrainXAIError(Exception):
    """A problem with the user's input or set-up, reported as one clear line."""


class Cancelled(BrainXAIError):
    """The user asked to stop (a cancel callback said so): not a failure to report as one."""

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)
