"""The outbox holds exactly the texts started and not yet final (comm_tui/protocol/outbox.py).

Facts about a text the outbox does not hold change nothing.

A holder's receipt, an ack or an expiry can name a text that already left the outbox
(delivered, expired, or never ours after a restore): each must be a no-op that returns
no state change, never an error in the node's receive path. Mutation testing found
``part_held``'s guard unpinned (bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol.outbox import Outbox, OutboxState


def test_a_text_not_in_the_outbox_is_left_alone() -> None:
    outbox = Outbox()
    assert outbox.part_held(b"gone" * 4, lambda _: True) is None
    assert outbox.part_acked(b"gone" * 4, b"p" * 32) is None
    assert outbox.part_expired(b"gone" * 4) is None
    assert len(outbox) == 0 and b"gone" * 4 not in outbox


def test_a_sent_text_is_not_sent_again_when_another_holder_confirms() -> None:
    outbox = Outbox()
    outbox.add_part(b"t" * 16, b"b" * 20, b"p" * 32)
    moved = outbox.part_held(b"t" * 16, lambda _: True)
    assert moved is not None and moved.state is OutboxState.SENT
    assert outbox.part_held(b"t" * 16, lambda _: True) is None


def test_a_started_text_waits_for_its_recipient_and_starts_over_queued() -> None:
    """``start`` (a re-send after a session reset) puts the text back, queued, with no
    parts until they are sealed again."""
    outbox = Outbox()
    outbox.add_part(b"t" * 16, b"b" * 20, b"p" * 32)
    assert outbox.part_held(b"t" * 16, lambda _: True) is not None  # sent
    outbox.start(b"t" * 16, b"b" * 20)
    assert b"t" * 16 in outbox and outbox.recipients() == {b"b" * 20}
    assert outbox.parts(b"t" * 16) == frozenset()
    outbox.add_part(b"t" * 16, b"b" * 20, b"q" * 32)
    moved = outbox.part_held(b"t" * 16, lambda _: True)
    assert moved is not None and moved.state is OutboxState.SENT  # it was queued again
