"""The one exception type the command line turns into a one-line message."""


class PipelineError(Exception):
    """A problem the user can fix: bad input, bad params, a missing artifact.

    The message says what was expected and what was found, naming the file (and,
    for data, the row and column). `run.py` prints it without a traceback.
    """


def printable(text: str) -> str:
    """`text` as it may be printed: control characters (which could clear a terminal or
    forge a line) shown as escapes such as \\x1b, the rest as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
