"""The program's entry point: Ctrl-C while the CLI is still being imported exits 130, one line."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest

from shoal.cli import entry, exit_codes


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """Stands for a Ctrl-C that lands while Python imports the CLI."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "shoal.cli.app":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_during_the_imports_exits_130_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "shoal.cli.app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_the_entry_points_code_is_the_tables() -> None:
    assert entry.INTERRUPTED == exit_codes.INTERRUPTED
