"""The custody view is exactly what the sender's store entries say (comm_tui/protocol/custody.py).

The app's custody screen and ``comm-tui history --json`` both show ``custody_of``; the
network tests in tests/test_custody.py follow a text through it, but only bound its
times loosely. Here the entries are built by hand, so each field is pinned to the entry
field it comes from: only our own message parts of that text, expiry in seconds, and a
retry time only when one is scheduled (mutation testing, bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.custody import Custody, PartCustody, custody_of
from comm_tui.protocol.relay_store import Entry, Kind

TEXT = b"t" * 16
T0 = 1_800_000_000.0


def _part(
    part: int, *, kind: Kind = Kind.MESSAGE, text_id: bytes = TEXT, **fields: object
) -> Entry:
    entry = Entry(
        kind,
        item_id=bytes([part + 1]) * 32,
        target=b"b" * 20,
        expires_ms=1_800_086_400_000,
        wire=pb.Message(),
        stored_at=T0,
        own_text_id=text_id,
        own_part=part,
        own_parts=2,
    )
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


def test_custody_is_built_from_our_own_parts_of_that_text_only() -> None:
    entries = [
        _part(1, attempts=1, next_at=0.0),
        _part(0, attempts=3, next_at=T0 + 40, holders={b"r" * 20}, first_held_at=T0 + 5),
        _part(0, text_id=b"u" * 16),  # another text of ours
        _part(0, kind=Kind.ACK),  # not a message part
        _part(0, text_id=b""),  # a message relayed for someone else
    ]
    assert custody_of(entries, TEXT) == Custody(
        text_id=TEXT,
        parts=2,
        expires_at=1_800_086_400.0,
        pending=(
            PartCustody(0, holders=1, held_since=T0 + 5, attempts=3, next_retry=T0 + 40),
            PartCustody(1, holders=0, held_since=None, attempts=1, next_retry=None),
        ),
    )
    assert custody_of(entries[2:], TEXT) is None


def test_a_retry_scheduled_at_any_positive_time_is_shown() -> None:
    """``next_at`` 0 means "not scheduled"; the first second after it is a real time."""
    custody = custody_of([_part(0, next_at=1.0)], TEXT)
    assert custody is not None and custody.pending[0].next_retry == 1.0
