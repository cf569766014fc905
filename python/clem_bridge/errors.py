"""Exceptions shared by the library, CLI, server and bridge."""


class InputError(ValueError):
    """Bad user input (file, image, parameter); the message is one human sentence."""


class Cancelled(RuntimeError):
    """A running computation was cancelled through its cancellation hook."""


class ServerError(RuntimeError):
    """The registration server answered with an error; ``status`` and ``code`` mirror its JSON body."""

    def __init__(self, message: str, status: int = 0, code: str = "server_error"):
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachable(ServerError, ConnectionError):
    """No registration server answered at the given URL."""
