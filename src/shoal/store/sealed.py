"""The sealing wrapper: compression, encryption and verification around a blob store."""
