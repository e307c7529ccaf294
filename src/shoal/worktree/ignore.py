"""Which paths are not synced: ``.shoalignore``, the device overlay, and a built-in deny list.

Order of precedence for one path (a folder that is excluded excludes
everything below it, as in git):

1. *Always excluded* (fails closed, no rule can re-include): editor swap and
   backup files, live database journals, shoal's own temp files.
2. The user's rules: ``.shoalignore`` at the arena root (gitignore syntax,
   synced with the folder), then the per-device overlay (same syntax, kept in
   the device's state, never synced); the last matching rule wins.
3. *Secrets* (``.env``, ``*.pem``, ``id_rsa``…) are excluded unless a ``!``
   rule re-includes them explicitly.

:meth:`IgnoreRules.explain` names the rule that excluded a path, for
``shoal status --ignored``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from shoal.errors import StorageError
from shoal.model.paths import path_within
from shoal.worktree.entries import TEMP_PREFIX

SHOALIGNORE = ".shoalignore"
ARENA_MARKER = ".shoal-arena"  # marks a joined arena's root: a bare mount point lacks it

ALWAYS_EXCLUDED: dict[str, tuple[str, ...]] = {
    "an editor swap or backup file": ("*.swp", "*.swo", "*.swx", "*~", ".#*", "4913", "#*#"),
    "a live database journal": ("*-journal", "*-wal", "*-shm"),
    "a shoal temp file": (f"{TEMP_PREFIX}*",),
    "the arena marker (kept per device)": (ARENA_MARKER,),
}
SECRETS: tuple[str, ...] = (".env", ".env.*", "*.pem", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*")


def _name_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_ALWAYS = [(why, _name_regex(pats), pats) for why, pats in ALWAYS_EXCLUDED.items()]
_SECRETS = _name_regex(SECRETS)
_FOLDER_MEMO = 16_384


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule that excludes paths, and where it comes from (for explanations)."""

    source: str
    pattern: str

    def describe(self) -> str:
        return f"{self.source}: {self.pattern}"


def _rule_lines(text: str, source: str) -> list[tuple[str, Rule]]:
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        rules.append((line, Rule(f"{source} line {number}", line.strip())))
    return rules


class IgnoreRules:
    def __init__(self, shoalignore: str = "", overlay: str = "", state: Iterable[str] = ()) -> None:
        """``state``: folders (arena paths) holding this device's own state, never synced."""
        self._state = frozenset(state)
        # Tells a pull that the rules changed since the last one: what they skipped then is read again.
        key = "\0".join([shoalignore, overlay, *sorted(self._state)])
        self.digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        lines = _rule_lines(shoalignore, SHOALIGNORE) + _rule_lines(overlay, "device overlay")
        self._rules = [rule for _, rule in lines]
        self._spec = pathspec.GitIgnoreSpec.from_lines([line for line, _ in lines]) if lines else None
        # Folder verdicts, remembered: a pull checks every ancestor of every path it applies, and
        # 20k files in 2,100 folders had meant 124k rule checks (the rules never change in place).
        self._folders: dict[str, Rule | None] = {}

    @classmethod
    def load(
        cls, root: Path, overlay_file: Path | None = None, state_dirs: Iterable[Path] = ()
    ) -> IgnoreRules:
        """Read ``ROOT/.shoalignore`` (not following a symlink) and the device overlay, if present.
        ``state_dirs``: shoal's own folders on this machine (the device home with its database,
        keys, tokens and mount cache; a local hub's data): those inside ``root`` are never synced,
        whatever the rules say."""
        state = [rel for folder in state_dirs if (rel := path_within(root, folder)) not in (None, ".")]
        return cls(_read_rules(root / SHOALIGNORE), _read_rules(overlay_file) if overlay_file else "", state)

    def match_entry(self, path: str, is_dir: bool = False) -> Rule | None:
        """The rule excluding ``path`` itself, ignoring its parents (the scanner has checked those)."""
        if path in self._state:
            return Rule("shoal's own state on this machine (a device's keys and tokens, a hub's store)", path)
        name = path.rpartition("/")[2]
        for why, regex, pats in _ALWAYS:
            if regex.fullmatch(name):
                matched = next(p for p in pats if fnmatch.fnmatchcase(name, p))
                return Rule(f"always excluded ({why})", matched)
        verdict: bool | None = None
        index: int | None = None
        if self._spec is not None:
            result = self._spec.check_file(f"{path}/" if is_dir else path)
            verdict, index = result.include, result.index
        if verdict:
            return (
                self._rules[index]
                if index is not None and index < len(self._rules)
                else Rule(SHOALIGNORE, "?")
            )
        if verdict is None and _SECRETS.fullmatch(name):
            matched = next(p for p in SECRETS if fnmatch.fnmatchcase(name, p))
            return Rule(f"built-in deny list (secrets; add '!{name}' to {SHOALIGNORE} to sync it)", matched)
        return None

    def match(self, path: str, is_dir: bool = False) -> Rule | None:
        """The rule excluding ``path`` or one of its parent folders, or None if it is synced."""
        parent = path.rpartition("/")[0]
        if parent:
            rule = self._folder_match(parent)
            if rule is not None:
                return rule
        return self.match_entry(path, is_dir)

    def _folder_match(self, folder: str) -> Rule | None:
        try:
            return self._folders[folder]
        except KeyError:
            pass
        parent = folder.rpartition("/")[0]
        rule = self._folder_match(parent) if parent else None
        if rule is None:
            rule = self.match_entry(folder, is_dir=True)
        if len(self._folders) >= _FOLDER_MEMO:
            self._folders.clear()
        self._folders[folder] = rule
        return rule

    def is_ignored(self, path: str, is_dir: bool = False) -> bool:
        return self.match(path, is_dir) is not None

    def scanner_filter(self, path: str, is_dir: bool) -> bool:
        """For ``scan_tree``: it visits parents first, so only the entry itself is checked."""
        return self.match_entry(path, is_dir) is not None

    def explain(self, path: str, is_dir: bool = False) -> str | None:
        """Why ``path`` is not synced, in words, or None if it is."""
        rule = self.match(path, is_dir)
        return None if rule is None else rule.describe()


def _read_rules(file: Path) -> str:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise StorageError(f"cannot read the ignore rules in {str(file)!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode("utf-8", errors="replace")


def git_locks(git_dir: Path) -> list[str]:
    """The ``*.lock`` files git holds in ``git_dir`` (objects/ is skipped: git locks nothing there)."""
    found: list[str] = []
    stack = [git_dir]
    while stack:
        folder = stack.pop()
        try:
            it = os.scandir(folder)
        except (NotADirectoryError, FileNotFoundError):
            continue
        except OSError as exc:
            raise StorageError(f"cannot look for git locks in {str(folder)!r}: {exc.strerror}") from exc
        with it:
            for item in it:
                if item.is_dir(follow_symlinks=False):
                    if not (folder == git_dir and item.name == "objects"):
                        stack.append(Path(item.path))
                elif item.name.endswith(".lock"):
                    found.append(os.path.relpath(item.path, git_dir))
    return sorted(found)


def is_git_locked(repo_root: Path) -> bool:
    """True while git holds a lock in ``repo_root/.git``: its content is mid-update, do not sync it yet."""
    return bool(git_locks(repo_root / ".git"))


def git_dir_of(path: str) -> str | None:
    """The arena path of the ``.git`` folder containing ``path`` (or being it), if any."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part == ".git":
            return "/".join(parts[: i + 1])
    return None
