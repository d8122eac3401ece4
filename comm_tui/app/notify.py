"""Telling the user a text arrived while they look elsewhere: desktop notification or bell.

Terminals turn two escape sequences into desktop notifications: OSC 9 (iTerm2, WezTerm,
Windows Terminal, ghostty, kitty, foot) and OSC 777 (urxvt's notify extension, foot,
ghostty, WezTerm). Neither can be asked whether it is supported, and an unsupported
one is ignored (or, in a few old terminals, shown as junk), so ``auto`` uses them only
in terminals known to support them and rings the bell elsewhere; inside tmux or screen
(which do not pass them on unless configured to) it rings the bell, which they show in
their status line.

The notification names who wrote, never what: a desktop notification is seen by anyone
near the screen and kept by the notification daemon, and the text is not ours to copy
there. The name is the user's own name for the contact (or "a new contact"); it is
still reduced to printable characters without ``;`` so that nothing in it can end the
sequence and smuggle in another (a terminal escape injection).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Kind = Literal["osc9", "osc777", "bell", "off"]

NAME_CHARS = 64
# TERM_PROGRAM values (and TERM prefixes) of terminals that show OSC 9 as a notification.
_OSC9_PROGRAMS = frozenset({"iTerm.app", "WezTerm", "ghostty", "WindowsTerminal"})
_OSC9_TERMS = ("xterm-kitty", "xterm-ghostty", "foot")
_OSC777_TERMS = ("rxvt-unicode",)


def notification_kind(mode: str, environ: Mapping[str, str]) -> Kind:
    """How to notify under ``mode`` (the config's ``notifications``: auto, desktop, bell,
    off) in the terminal that ``environ`` describes."""
    if mode == "off":
        return "off"
    if mode == "bell":
        return "bell"
    multiplexed = "TMUX" in environ or environ.get("TERM", "").startswith("screen")
    program = environ.get("TERM_PROGRAM", "")
    term = environ.get("TERM", "")
    if environ.get("WT_SESSION"):
        program = "WindowsTerminal"
    if not multiplexed and (program in _OSC9_PROGRAMS or term.startswith(_OSC9_TERMS)):
        return "osc9"
    if not multiplexed and term.startswith(_OSC777_TERMS):
        return "osc777"
    return "osc9" if mode == "desktop" else "bell"


def safe_name(name: str) -> str:
    """``name`` with nothing that could end or extend an escape sequence."""
    kept = "".join(c for c in name if c.isprintable() and c != ";")
    return kept[:NAME_CHARS] or "someone"


def notification_sequence(kind: Kind, sender: str) -> str:
    """The bytes to write for a new text from ``sender`` ("" for bell and off)."""
    who = safe_name(sender)
    if kind == "osc9":
        return f"\x1b]9;comm-tui: new message from {who}\x07"
    if kind == "osc777":
        return f"\x1b]777;notify;comm-tui;New message from {who}\x1b\\"
    return ""
