"""Bad arguments get a usage message and exit code 2, never a traceback."""

from __future__ import annotations

import pytest

from shoal.cli.app import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pack", "/nonexistent-dir", "-o", "x.flist", "--store", "s"], "does not exist"),
        (["pack", "/tmp", "--workers", "many", "-o", "x.flist", "--store", "s"], "--workers"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_shoal_errors_are_reported_with_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["unpack", "/nonexistent.flist", "/tmp/never", "--store", "/tmp/never-store"])
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert "no image at /nonexistent.flist" in err
    assert "hint:" in err


def test_command_groups_list_every_command() -> None:
    import typer

    from shoal.cli.commands import COMMAND_GROUPS, register

    app = typer.Typer()
    register(app, [])
    names = {cmd.name or (cmd.callback.__name__ if cmd.callback else "") for cmd in app.registered_commands}
    names |= {group.name for group in app.registered_groups if group.name}
    assert names == set(COMMAND_GROUPS)


@pytest.mark.parametrize("group", ["arena", "cache", "device", "flist", "hub", "key", "store"])
def test_a_group_without_a_command_shows_its_commands(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([group])
    shown = capsys.readouterr()
    assert f" {group} [OPTIONS] COMMAND" in shown.out + shown.err
    assert "Commands" in shown.out + shown.err
    assert "Missing command" not in shown.err


def test_image_commands_do_not_load_the_hub_stack() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from shoal.cli.app import main\n"
        "try:\n    main(['pack', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'uvicorn', 'pyfuse3') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_help_paragraphs_flow_with_the_terminal_not_the_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The docstring breaks this sentence after "and the" at 100 columns of source.
    monkeypatch.setenv("COLUMNS", "200")
    main(["mount", "--help"])  # help returns without an exit code to raise
    help_text = capsys.readouterr().out
    assert "this device, and the sync daemon (or `shoal sync`) sends them like any local edit." in help_text


def test_reflow_keeps_examples_and_lists_line_by_line() -> None:
    from shoal.cli.commands import reflow

    doc = """Summary line.

    A sentence broken
    across two lines.

    Examples:
      shoal a
      shoal b
    """
    assert (
        reflow(doc)
        == "Summary line.\n\nA sentence broken across two lines.\n\nExamples:\n  shoal a\n  shoal b"
    )
