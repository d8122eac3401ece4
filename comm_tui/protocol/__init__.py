"""The sans-IO protocol core: wire codec, routing table, relay store and node state machine.

Nothing here opens a socket, reads a clock or starts a thread. Every entry point
takes the current time and returns what to send, so the same code runs under real
UDP (``comm_tui.net``), under the simulator (``comm_tui.sim``) and in unit tests.
"""
