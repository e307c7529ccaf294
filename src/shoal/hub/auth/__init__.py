"""Accounts, tenants, device login (RFC 8628), tokens and devices of the hub."""
