"""The one exception type the command line turns into a one-line message."""


class PipelineError(Exception):
    """A problem the user can fix: bad input, bad params, a missing artifact.

    The message says what was expected and what was found, naming the file (and,
    for data, the row and column). `run.py` prints it without a traceback.
    """
