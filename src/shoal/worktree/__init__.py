"""L2 worktree: an arena's files on disk. Scan, watch, ignore rules, atomic changes; no SQL or network."""

from shoal.worktree.atomic import AtomicFile, delete, make_dir, make_symlink, remove_temp, rename, write_file
from shoal.worktree.entries import STUB_SUFFIX, TEMP_PREFIX, ScanEntry, StatKey, is_temp_name, stat_changed
from shoal.worktree.ignore import SHOALIGNORE, IgnoreRules, Rule, git_dir_of, git_locks, is_git_locked
from shoal.worktree.paths import ArenaRoot, BadName, name_from_disk
from shoal.worktree.scan import ScanDiff, ScanProblem, ScanResult, compare, scan_tree
from shoal.worktree.watch import RootState, TreeWatcher, WatchMode, WatchReport, WatchStatus, root_state

__all__ = [
    "SHOALIGNORE",
    "STUB_SUFFIX",
    "TEMP_PREFIX",
    "ArenaRoot",
    "AtomicFile",
    "BadName",
    "IgnoreRules",
    "RootState",
    "Rule",
    "ScanDiff",
    "ScanEntry",
    "ScanProblem",
    "ScanResult",
    "StatKey",
    "TreeWatcher",
    "WatchMode",
    "WatchReport",
    "WatchStatus",
    "compare",
    "delete",
    "git_dir_of",
    "git_locks",
    "is_git_locked",
    "is_temp_name",
    "make_dir",
    "make_symlink",
    "name_from_disk",
    "remove_temp",
    "rename",
    "root_state",
    "scan_tree",
    "stat_changed",
    "write_file",
]
