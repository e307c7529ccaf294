"""The audit log: who logged in, failed, rotated, was refused, deleted or restored what."""
