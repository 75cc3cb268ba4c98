"""The one exception type for user mistakes.

The CLI catches only :class:`WordformerError`, prints its one-line message and exits with status 2;
any other exception is a bug and keeps its traceback.
"""


class WordformerError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""
