"""The one base class of errors caused by the user's files, data or settings.

Such an error is shown as one line (`Name: message`), without a traceback: its message says
what is wrong and what to do. Anything else is a bug or an environment failure and keeps its
traceback.
"""
import sys
from typing import Tuple


class UserError(Exception):
    """A config value, file or piece of data that cannot be used as given.

    Subclasses take one message argument: PyTorch re-raises an exception from a DataLoader
    worker in the main process as `type(error)(message)`. A tool that stops on one exits with
    `exit_code`: 2 for the settings (as for a bad command line), 1 for files and data.
    """

    exit_code = 1


def original_message(error: BaseException) -> str:
    """The message `error` was raised with, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception in the main process as `type(error)(text)`, the
    text quoting the worker's traceback, which ends with the line `<module>.<Class>: <message>`
    for exactly this class. That line is the one place where the message survives, so it is
    read back from there.
    """
    text = str(error)
    if not (text.startswith("Caught ") and "\nOriginal Traceback (most recent call last):" in text):
        return text
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else \
        f"{kind.__module__}.{kind.__qualname__}"
    start = text.rfind(f"\n{name}: ")
    return text[start + len(name) + 3:].strip() if start >= 0 else text


def describe(error: BaseException) -> str:
    """`Name: message`, the one line a user error is reported as."""
    return f"{type(error).__name__}: {original_message(error)}"


def report_user_error(tool: str, error: UserError, settings: Tuple[type, ...] = ()) -> int:
    """Print the one line a tool stops on and return its exit code: `config error: message`
    and 2 for an error in the settings (exit code 2, or one of the types in `settings`),
    `Name: message` and 1 for any other."""
    if error.exit_code == 2 or isinstance(error, settings):
        print(f"{tool}: config error: {error}", file=sys.stderr)
        return 2
    print(f"{tool}: {describe(error)}", file=sys.stderr)
    return error.exit_code
