"""L1 reconciliation: conflict names, deterministic winners, three-way decisions, event coalescing.

Pure: values in, values out. No files, sockets or clocks (the time is passed in).
"""

from shoal.reconcile.coalesce import Batch, Coalescer, Event, EventType, Move
from shoal.reconcile.decide import ABSENT, Action, Decision, Local, Remote, Synced, decide, local_changed
from shoal.reconcile.kinds import Kind
from shoal.reconcile.names import conflict_copy_name, is_conflict_copy, short_device_id, split_extension
from shoal.reconcile.safety import Identity, SafetyCheck, Verdict, check_deletions, detect_moves
from shoal.reconcile.winner import ConflictPlan, ConflictPolicy, Version, plan_conflict, winner

__all__ = [
    "ABSENT",
    "Action",
    "Batch",
    "Coalescer",
    "ConflictPlan",
    "ConflictPolicy",
    "Decision",
    "Event",
    "EventType",
    "Identity",
    "Kind",
    "Local",
    "Move",
    "Remote",
    "SafetyCheck",
    "Synced",
    "Verdict",
    "Version",
    "check_deletions",
    "conflict_copy_name",
    "decide",
    "detect_moves",
    "is_conflict_copy",
    "local_changed",
    "plan_conflict",
    "short_device_id",
    "split_extension",
    "winner",
]
