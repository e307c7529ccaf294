"""Rate and size limits applied before the hub does any work for a request."""
