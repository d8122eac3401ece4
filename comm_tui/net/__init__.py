"""Adapters that drive the sans-IO core over real sockets: UDP, persistence, discovery."""
