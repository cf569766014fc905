"""Exceptions shared by the library, CLI, server and bridge."""


class InputError(ValueError):
    """Bad user input (file, image, parameter); the message is one human sentence."""


class Cancelled(RuntimeError):
    """A running computation was cancelled through its cancellation hook."""
