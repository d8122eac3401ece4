"""The outbox's one state machine (comm_tui/protocol/outbox.py).

The transition table is spelled out here in full, every (state, cause) pair with its
expected result, so that any one-line change to ``TRANSITIONS`` (a move added, dropped
or re-aimed) fails ``test_every_transition``; the database's forward-only rule is checked
to be the same table.
"""

from __future__ import annotations

import itertools

import pytest

from comm_tui.protocol.events import TextStateChanged
from comm_tui.protocol.outbox import (
    FINAL_STATES,
    TRANSITIONS,
    Cause,
    Outbox,
    OutboxState,
    next_state,
    sources,
)
from comm_tui.store import db

Q, S, D, E = OutboxState.QUEUED, OutboxState.SENT, OutboxState.DELIVERED, OutboxState.EXPIRED
EXPECTED: dict[tuple[OutboxState, Cause], OutboxState | None] = {
    (Q, Cause.ALL_HELD): S,
    (Q, Cause.ALL_ACKED): D,
    (Q, Cause.EXPIRED): E,
    (S, Cause.ALL_HELD): None,
    (S, Cause.ALL_ACKED): D,
    (S, Cause.EXPIRED): E,
    (D, Cause.ALL_HELD): None,
    (D, Cause.ALL_ACKED): None,
    (D, Cause.EXPIRED): None,
    (E, Cause.ALL_HELD): None,
    (E, Cause.ALL_ACKED): None,
    (E, Cause.EXPIRED): None,
}
TEXT, RECIPIENT = b"t" * 16, b"r" * 20


@pytest.mark.parametrize(("state", "cause"), list(itertools.product(OutboxState, Cause)))
def test_every_transition(state: OutboxState, cause: Cause) -> None:
    assert next_state(state, cause) == EXPECTED[(state, cause)]


def test_table_has_only_the_expected_moves() -> None:
    assert dict(TRANSITIONS) == {k: v for k, v in EXPECTED.items() if v is not None}
    assert {D, E} == FINAL_STATES
    assert [s.value for s in OutboxState] == ["queued", "sent", "delivered", "expired"]


def test_database_moves_are_the_outbox_table() -> None:
    assert sources(D) == (Q, S)
    assert sources(Q) == ()
    assert db._FORWARD_FROM == {
        "sent": ("queued",),
        "delivered": ("queued", "sent"),
        "expired": ("queued", "sent"),
    }


def test_sent_only_when_every_unacked_part_is_held() -> None:
    outbox = Outbox()
    outbox.start(TEXT, RECIPIENT)
    for part in (b"p1", b"p2"):
        outbox.add_part(TEXT, RECIPIENT, part)
    assert outbox.part_held(TEXT, lambda pid: pid == b"p1") is None
    assert outbox.part_held(TEXT, lambda pid: True) == TextStateChanged(TEXT, RECIPIENT, S)
    assert outbox.part_held(TEXT, lambda pid: True) is None  # sent once


def test_delivered_with_the_last_ack_then_gone() -> None:
    outbox = Outbox()
    outbox.start(TEXT, RECIPIENT)
    for part in (b"p1", b"p2"):
        outbox.add_part(TEXT, RECIPIENT, part)
    assert outbox.part_acked(TEXT, b"p1") is None
    assert outbox.parts(TEXT) == {b"p2"}
    assert outbox.part_acked(TEXT, b"p2") == TextStateChanged(TEXT, RECIPIENT, D)
    assert TEXT not in outbox and len(outbox) == 0
    assert outbox.part_expired(TEXT) is None  # a final state never moves


def test_expired_from_queued_and_a_restored_text_is_sent_again() -> None:
    outbox = Outbox()
    outbox.add_part(TEXT, RECIPIENT, b"p1")
    assert outbox.part_expired(TEXT) == TextStateChanged(TEXT, RECIPIENT, E)
    outbox.add_part(TEXT, RECIPIENT, b"p1")
    outbox.restored(lambda pid: True)
    assert outbox.part_held(TEXT, lambda pid: True) is None  # already sent: no event
    assert outbox.recipients() == {RECIPIENT}
