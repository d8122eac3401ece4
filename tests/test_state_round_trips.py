"""Persisted ratchet and prekey states come back exactly as they were written.

The node writes these states to disk and reads them after every restart; a field lost or
misread there breaks a session for good. Mutation testing (bench/MUTATION.md) found the
round trips tested only for states in the middle of a conversation: a state before its
first letter (no receiving or sending chain yet), u32 counters at their maximum, and the
flags of a freshly loaded prekey store were unpinned.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PrekeyStore
from comm_tui.crypto.ratchet import RatchetState, generate_dh
from comm_tui.protocol.events import SessionsChanged
from comm_tui.protocol.node import Node

NOW = 1_800_000_000.0
U32_MAX = 2**32 - 1


def fresh_pair() -> tuple[RatchetState, RatchetState]:
    sk = bytes(range(32))
    pair = generate_dh()
    return RatchetState.initiator(sk, pair[1]), RatchetState.responder(sk, pair)


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_a_state_before_its_first_letter_round_trips(side: str) -> None:
    initiator, responder = fresh_pair()
    state = initiator if side == "initiator" else responder
    # The initiator has a sending chain and no receiving one; the responder neither.
    assert state.ckr is None
    assert (state.cks is None) == (side == "responder")
    assert (state.dhr is None) == (side == "responder")
    assert RatchetState.deserialize(state.serialize()) == state


def test_counters_round_trip_over_their_whole_u32_range() -> None:
    initiator, responder = fresh_pair()
    initiator.encrypt_step()
    initiator.encrypt_step()
    responder.commit(initiator.encrypt_step()[0], NOW)  # two skipped keys
    assert len(responder.skipped) == 2
    (dh, _), (mk, stored) = next(iter(responder.skipped.items()))
    skipped = responder.skipped.copy()
    skipped[(dh, U32_MAX)] = (mk, stored)
    state = replace(responder, ns=U32_MAX, nr=U32_MAX, pn=U32_MAX, skipped=skipped)
    assert RatchetState.deserialize(state.serialize()) == state


def test_a_loaded_prekey_store_is_clean_and_publishes_the_same_bundle() -> None:
    """Nothing to persist right after a load, and version 1 of the bundle: the node
    publishes it again after a restart (it cannot know whether its last record went out)."""
    store = PrekeyStore(b"k" * 32, NOW)
    store.maintain(NOW + 8 * 24 * 3600.0)  # one retired signed prekey
    store.consume_one_time(store.public_bundle().one_time_prekeys[0][0])
    assert store.dirty
    loaded = PrekeyStore.deserialize(b"k" * 32, store.serialize(), NOW + 8 * 24 * 3600.0)
    assert loaded.dirty is False
    assert loaded.bundle_version == 1
    assert loaded.public_bundle() == store.public_bundle()
    assert loaded.serialize() == store.serialize()


def test_a_new_nodes_prekeys_are_reported_for_saving_before_anything_else() -> None:
    """A new profile's prekeys are made at construction and must reach the disk with the
    first batch of events: a bundle published from them and lost at a crash would leave
    every session started with it unopenable (docs/PROTOCOL.md, "Letters and sealing")."""
    node = Node(Identity.from_seed(b"\x03" * 32), NOW, rng=random.Random(3))
    node.handle_timer(NOW)
    saved = [e.prekeys for e in node.drain_events() if isinstance(e, SessionsChanged)]
    assert saved and saved[0] is not None
    assert PrekeyStore.deserialize(node.identity.key, saved[0], NOW).public_bundle() == (
        node._prekeys.public_bundle()
    )
