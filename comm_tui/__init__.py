"""comm-tui: a decentralized, end-to-end encrypted instant messenger for the terminal."""

__version__ = "0.1.0"
