"""Everything a profile keeps on disk: where it lives, who may write it, and what it holds.

Paths come from platformdirs (``paths``), one process at a time runs a node on a profile
(``lock``), settings are a small TOML file (``config``), and contacts, history, the outbox,
the relay store and known peers live in one SQLite database (``db``), the only module that
opens it.
"""
