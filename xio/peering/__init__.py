"""Peering: the pure core of the mesh protocol (codec, identity, records, routing, handshake)."""
