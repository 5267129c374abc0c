"""The project's exception tree root. It lives in the bottom layer so every package can use it."""


class OrchError(Exception):
    """An error meant for the user: one clear line, with an optional hint on what to do."""

    def __init__(self, message: str, *, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class StoreError(OrchError):
    """The experiment store cannot be read or written as asked."""


class StoreIOError(StoreError, OSError):
    """Reading or writing the store failed (full or read-only disk, object store errors).

    An OSError too, so that callers that retry I/O errors (the metrics writer) still do.
    """
