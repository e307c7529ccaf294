"""Periodic upkeep: expired uploads, retention, garbage collection, log compaction."""
