"""The command line as a newcomer meets it: help, version, names, reruns and resumes."""

from __future__ import annotations

import json
import re

import pytest

from lnlclean import __version__
from lnlclean.cli import main

COMMANDS = ("audit", "relabel", "benchmark", "consensus", "report", "methods", "version")
QUIET_CPU = ("--device", "cpu", "--quiet")


def help_text(capsys, monkeypatch, *command: str, columns: int = 80) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_and_examples_are_whole_commands(capsys, monkeypatch, command):
    text = help_text(capsys, monkeypatch, command)
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("lnlclean ") and line.rstrip().endswith("\\"):
            assert lines[i + 1].strip().startswith("--")  # a long example goes on, shell-style, on the next line
        if line.strip().startswith("lnlclean "):
            assert not re.search(r"--[a-z]+-$", line.rstrip())  # never broken inside an option name


def test_flags_take_no_value_in_help_and_valued_options_show_what_they_take(capsys, monkeypatch):
    text = help_text(capsys, monkeypatch, "audit", columns=120)
    assert re.search(r"^\s+--overwrite\s{2,}Replace", text, re.M)
    assert "<bool>" not in text
    assert re.search(r"--time-budget TIME\s", text) and re.search(r"--epochs N\s", text)
    assert "--schedule [cosine|step|constant]" in text


def test_version_as_an_option_and_as_a_command(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == __version__
    assert main(["version"]) == 0 and capsys.readouterr().out.strip() == __version__


def test_a_bare_command_line_shows_the_help_and_succeeds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: lnlclean") and "audit" in out and "--version" in out


@pytest.mark.parametrize("typed", ["alimm", "ALIM", "Alim", "pmnr"])
def test_a_mistyped_method_gets_a_suggestion(capsys, digits_folder, typed):
    assert main(["audit", str(digits_folder.root), str(digits_folder.csv), "--method", typed, *QUIET_CPU]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --method '{typed}': unknown; did you mean ") and "choose one of" in err
    assert ("alim" if "l" in typed.lower() else "pmnar") in err.split("did you mean ")[1].split("?")[0]


@pytest.fixture(scope="module")
def finished_audit(noisy_folder_small, tmp_path_factory):
    """A finished 2-epoch ce audit of the small noisy folder: (folder fixture, audit directory)."""
    out = tmp_path_factory.mktemp("finished") / "audit"
    args = [str(noisy_folder_small["images"]), str(noisy_folder_small["csv"]), "--out", str(out), "--epochs", "2"]
    assert main(["audit", *args, *QUIET_CPU]) == 0
    return noisy_folder_small, out


def test_a_finished_audit_leaves_no_checkpoint_and_refuses_resume_with_a_clear_message(finished_audit, capsys):
    folder, out = finished_audit
    assert sorted(p.name for p in out.iterdir()) == ["audit.parquet", "report.html", "summary.json"]
    before = (out / "summary.json").read_bytes()
    assert (
        main(
            [
                "audit",
                str(folder["images"]),
                str(folder["csv"]),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--resume",
                *QUIET_CPU,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume: {out} holds a finished audit, so there is nothing to resume")
    assert "pass --overwrite instead of --resume" in err and len(err.splitlines()) == 1
    assert (out / "summary.json").read_bytes() == before


def test_relabel_from_audit_takes_the_audit_folder_as_well_as_the_file(finished_audit, tmp_path):
    folder, out = finished_audit
    by_folder, by_file = tmp_path / "by-folder.csv", tmp_path / "by-file.csv"
    base = ["relabel", str(folder["images"]), str(folder["csv"]), "--quiet"]
    assert main([*base, "--from-audit", str(out), "--out", str(by_folder)]) == 0
    assert main([*base, "--from-audit", str(out / "audit.parquet"), "--out", str(by_file)]) == 0
    assert by_folder.read_bytes() == by_file.read_bytes()


def test_relabel_from_a_folder_without_an_audit_names_the_option(finished_audit, tmp_path, capsys):
    folder, _ = finished_audit
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "relabel",
            str(folder["images"]),
            str(folder["csv"]),
            "--from-audit",
            str(empty),
            "--out",
            str(tmp_path / "x.csv"),
        ]
    )
    assert code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: --from-audit {empty}: holds no audit.parquet; pass the --out folder of a finished lnlclean audit"
    )


def test_a_benchmark_runs_again_into_its_own_folder_and_explains_its_table(tmp_path, capsys):
    args = [
        "benchmark",
        "digits",
        "--noise",
        "sym40",
        "--method",
        "ce",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "bench"),
    ]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "noise true/est: share of wrong labels injected / estimated by the audit" in first.out
    assert "label acc: share of right labels before → after relabel" in first.out
    assert "and an HTML report per run" in first.out and (tmp_path / "bench" / "digits-sym40-ce.html").is_file()
    assert main(args) == 0
    assert (
        f"replacing the results of an earlier benchmark in {tmp_path / 'bench' / 'benchmark.json'}"
        in capsys.readouterr().err
    )
    assert len(json.loads((tmp_path / "bench" / "benchmark.json").read_text())["runs"]) == 1


def test_a_short_run_of_a_method_with_a_warmup_trains_and_warns_instead_of_refusing(tmp_path, capsys):
    args = [
        "benchmark",
        "digits",
        "--noise",
        "sym40",
        "--method",
        "alim",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(args) == 0
    run = json.loads((tmp_path / "b" / "benchmark.json").read_text())["runs"][0]
    assert "still-learning" in [warning["code"] for warning in run["warnings"]]
