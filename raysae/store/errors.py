"""The store's error type (kept apart so every store module can raise it without cycles)."""


class StoreError(RuntimeError):
    """The result store cannot be used: unreachable, malformed URI, or out of retries."""
