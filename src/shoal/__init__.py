"""shoal: self-hosted, end-to-end encrypted file sync with on-demand hydration."""

__version__ = "0.1.0"
