from __future__ import annotations

import pytest

from diag import __version__, cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"archon-diag {__version__}"


def test_help_lists_every_contract_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in (
        "demo",
        "run",
        "tui",
        "load",
        "profile",
        "db",
        "explain",
        "report",
        "compare",
        "doctor",
        "pg",
        "demo-target",
    ):
        assert f"    {command}" in out, command


def test_unknown_subcommand_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "invalid choice" in err
    assert "Traceback" not in err


def test_not_built_subcommand_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "future-thing", "a command that has no module yet")
    assert cli.main(["future-thing", "--any", "args"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "archon-diag future-thing: not built yet in this version"


def test_no_subcommand_prints_help_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "commands" in capsys.readouterr().out


def test_bad_option_value_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pg", "sideways"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sideways" in err


def test_demo_refuses_a_full_out_dir_before_starting_anything(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    standin = tmp_path / "standin"
    code = cli.main(["demo", "--headless", "--dir", str(standin), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [
        f"archon-diag demo: output directory {tmp_path / 'out'} is not empty; pick a new --out"
    ]
    assert not standin.exists()  # no stand-in was started (no seeding, no cluster)
