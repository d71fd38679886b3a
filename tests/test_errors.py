"""User-supplied text in messages: always one line, printable text kept as is."""

from lnlclean.errors import one_line


def test_every_line_break_and_control_character_is_escaped():
    text = "a\nb\rc\td\x00e\x1ef\x85g\u2028h\u2029i\x0bj\x0ck"
    shown = one_line(text)
    assert shown == "a\\nb\\rc\\td\\x00e\\x1ef\\x85g\\u2028h\\u2029i\\x0bj\\x0ck"
    assert len(shown.splitlines()) == 1


def test_printable_text_and_non_ascii_letters_are_kept():
    assert one_line("images/café, 猫 [1].png") == "images/café, 猫 [1].png"
