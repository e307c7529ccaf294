"""Key envelopes of encrypted arenas on the hub: opaque blobs stored, listed and handed out, never opened."""
