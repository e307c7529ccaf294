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
