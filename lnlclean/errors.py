"""The one exception type for user mistakes.

Anything the user can fix (a bad file, row or option) raises :class:`UserError` with a
one-line message that names the file, row or option and says what to do. The CLI prints
it on stderr and exits with code 2; it never shows a traceback for these.
"""


class UserError(Exception):
    """A mistake in the user's input or options; the message is shown as is."""

    exit_code = 2
