"""The reference tables in docs/ are those the code generates, so they cannot drift from it."""

from pathlib import Path

import pytest

from lnlclean import reference
from lnlclean.cli import help_text, main
from lnlclean.methods import METHODS

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(
    "page, command, generate",
    [
        ("methods.md", "lnlclean methods --markdown", reference.methods_markdown),
        ("outputs.md", "lnlclean columns --markdown", reference.columns_markdown),
    ],
)
def test_generated_blocks_in_docs_match_the_code(page, command, generate):
    document = (DOCS / page).read_text(encoding="utf-8")
    assert reference.replace_generated(document, command, generate()) == document, (
        f"docs/{page} is out of date: paste the output of `{command}` between its markers"
    )


@pytest.mark.parametrize("command", ["audit", "report"])
def test_the_help_quoted_in_docs_is_what_the_command_prints(command):
    document = (DOCS / "commands.md").read_text(encoding="utf-8")
    printed = "```\n" + help_text(command).rstrip("\n") + "\n```"
    assert reference.replace_generated(document, f"lnlclean {command} --help", printed) == document, (
        f"docs/commands.md is out of date: paste what `COLUMNS=80 lnlclean {command} --help` prints between its markers"
    )


@pytest.mark.parametrize(
    "command, generate", [("methods", reference.methods_markdown), ("columns", reference.columns_markdown)]
)
def test_the_markdown_commands_print_the_generated_blocks(capsys, command, generate):
    assert main([command, "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == generate()


def test_every_method_option_says_what_it_does_and_every_column_is_listed():
    for name, cls in METHODS.items():
        for option in reference.method_options(name):
            assert option.help.strip(), f"{option.name} has no help"
        text = reference.methods_text()
        assert all(column in text for column in cls.columns)
        assert all(option.name in text for option in reference.method_options(name))


def test_replacing_a_block_needs_its_markers():
    with pytest.raises(ValueError, match="no block generated"):
        reference.replace_generated("no markers here", "lnlclean methods --markdown", "x")
