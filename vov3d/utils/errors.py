"""The one base class of errors caused by the user's files, data or settings.

Such an error is shown as one line (`Name: message`), without a traceback: its message says
what is wrong and what to do. Anything else is a bug or an environment failure and keeps its
traceback.
"""


class UserError(Exception):
    """A config value, file or piece of data that cannot be used as given.

    Subclasses take one message argument: PyTorch re-raises an exception from a DataLoader
    worker in the main process as `type(error)(message)`.
    """
