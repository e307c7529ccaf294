"""Per-tenant storage quotas on unique chunk bytes."""
