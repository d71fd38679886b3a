"""The one exception type for user mistakes, and how user-supplied text is shown in a message.

Anything the user can fix (a bad file, row or option) raises :class:`UserError` with a
one-line message that names the file, row or option and says what to do. The CLI prints
it on stderr through :func:`one_line` and exits with code 2; it never shows a traceback for
these.
"""


class UserError(Exception):
    """A mistake in the user's input or options; the message is shown as is."""

    exit_code = 2


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """Returns `text` with every character that is not printable escaped (``\\n``, ``\\x00``, ``\\u2028``, …).

    Paths and cells come from the user's files and may hold line breaks, NUL or other control
    characters; escaped, a message is always exactly one line (for ``str.splitlines()`` too) and
    shows what the file holds. Printable characters, non-ASCII letters included, are kept.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
