"""How times, addresses, delivery states and other people's text look on screen, in one place."""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Mapping
from datetime import date

# Compact delivery marks: one or two cells, readable without colour.
STATE_MARKS: dict[str, str] = {
    "queued": "◷",
    "sent": "✓",
    "delivered": "✓✓",
    "read": "✓✓●",
    "expired": "✗",
    "received": "",
}
# The same marks for terminals that cannot draw them: one tick, two ticks, a cross.
ASCII_STATE_MARKS: dict[str, str] = {
    "queued": "..",
    "sent": "v",
    "delivered": "vv",
    "read": "vv*",
    "expired": "x",
    "received": "",
}
ASCII_ENV = "COMM_TUI_ASCII"
STATE_HELP: dict[str, str] = {
    "queued": "queued: no peer has taken it yet",
    "sent": "sent: handed to the network",
    "delivered": "delivered: the recipient acknowledged it",
    "read": "read: the recipient opened it (they chose to send read receipts)",
    "expired": "expired: it was never delivered",
}
SHORT_ADDRESS_CHARS = 8


def shown_state(state: str, read_at: float | None) -> str:
    """The mark a message row shows: ``read`` once the recipient said it read it
    (docs/PROTOCOL.md, "7.1.1"), whatever the outbox state, else the state itself."""
    return "read" if read_at is not None else state


# C0 controls become their Unicode "control picture" (ESC shows as U+241B), DEL as U+2421.
_C0_PICTURES = {code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in "\n\t"}
_C0_PICTURES[0x7F] = "\u2421"
# Bidi embeddings, overrides and isolates: a peer could reorder or hide what we show.
_BIDI_CONTROLS = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN = str.maketrans(
    {
        **_C0_PICTURES,
        **dict.fromkeys(range(0x80, 0xA0), "\ufffd"),  # C1 controls (0x9b is a one-byte CSI)
        **dict.fromkeys(_BIDI_CONTROLS, "\ufffd"),
    }
)


def shown(text: str) -> str:
    """``text`` made safe to draw: every control character replaced by a visible mark.

    Texts, names and previews come from other people (a stranger can message anyone),
    and the terminal would obey what they contain: ESC starts ANSI and OSC sequences
    that recolour, retitle or clear the screen, CR and backspace overwrite what was
    drawn, and bidi overrides reorder a line so it reads differently from what was
    sent. Textual strips only a few of these, silently. Here C0 controls show as
    control pictures (``\\x1b`` as ``␛``), C1 controls, bidi overrides and isolates
    and lone surrogates (which the terminal's encoder cannot write) as U+FFFD;
    newline and tab stay. Zero-width and combining characters are ordinary text and
    are kept. This does not make markup safe: draw the result as literal text
    (``Content(...)``, ``markup=False``), never as markup.
    """
    return _SURROGATE.sub("\ufffd", text.translate(_SHOWN))


def ascii_only(
    env: Mapping[str, str], encoding: str | None, configured: bool | None = None
) -> bool:
    """Whether to draw marks and the QR code with ASCII alone.

    ``COMM_TUI_ASCII=1`` asks for it and ``=0`` refuses it; then the profile's
    ``ascii = true/false`` setting; otherwise it is used when the output encoding is
    not UTF-8 (the marks and half blocks cannot be written) or the terminal is the
    Linux console, whose built-in font lacks ✓ and ◷.
    """
    chosen = env.get(ASCII_ENV, "").strip()
    if chosen in ("0", "1"):
        return chosen == "1"
    if configured is not None:
        return configured
    try:
        utf8 = codecs.lookup(encoding or "utf-8").name == "utf-8"
    except LookupError:
        utf8 = False
    return not utf8 or env.get("TERM") == "linux"


def short_address(address: bytes) -> str:
    """The first hex digits of an address, enough to tell people apart on screen."""
    return address.hex()[:SHORT_ADDRESS_CHARS]


def message_time(when: float, now: float | None = None) -> str:
    """``14:03`` for today, ``05 Mar 14:03`` before that."""
    local = time.localtime(when)
    today = time.localtime(time.time() if now is None else now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M", local)
    return time.strftime("%d %b %H:%M", local)


def list_time(when: float, now: float | None = None) -> str:
    """``14:03`` for today, ``05 Mar`` this year, ``2024-03-05`` before."""
    local = time.localtime(when)
    today = time.localtime(time.time() if now is None else now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M", local)
    if local.tm_year == today.tm_year:
        return time.strftime("%d %b", local)
    return time.strftime("%Y-%m-%d", local)


def ago(seconds: float) -> str:
    """``3s``, ``4m``, ``2h``, ``5d``: how long ago, in at most four characters."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def size(count: float) -> str:
    """A byte count in B, KiB, MiB or GiB with at most one decimal."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def one_line(text: str, limit: int = 40) -> str:
    """A preview of a text on one line, cut with an ellipsis, made safe with :func:`shown`."""
    flat = " ".join(shown(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def day_label(when: float, now: float | None = None) -> str:
    """A day separator's words: "Today", "Yesterday", else the date in full (local time)."""
    day = time.localtime(when)
    today = time.localtime(time.time() if now is None else now)
    days = _day_number(today) - _day_number(day)
    if days == 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    return time.strftime("%A %d %B %Y", day)


def local_day(when: float) -> tuple[int, int, int]:
    """The local calendar day of ``when``: what day separators compare."""
    day = time.localtime(when)
    return (day.tm_year, day.tm_mon, day.tm_mday)


def _day_number(day: time.struct_time) -> int:
    return date(day.tm_year, day.tm_mon, day.tm_mday).toordinal()
