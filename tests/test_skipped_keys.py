"""The node-wide bound on skipped message keys gives up the oldest key first.

``RatchetState.drop_oldest_skipped`` is how sessions.py keeps every session's skipped
keys under one bound (docs/PROTOCOL.md, "Letters and sealing"): the key it gives up must
be the oldest, the one whose letter is least likely still to come. Mutation testing
(bench/MUTATION.md) found that dropping the newest instead went unnoticed.
"""

from __future__ import annotations

import pytest

from comm_tui.crypto.ratchet import RatchetError, RatchetState, generate_dh

NOW = 1_800_000_000.0


def test_the_oldest_skipped_key_is_given_up_first() -> None:
    sk = bytes(range(32))
    pair = generate_dh()
    alice, bob = RatchetState.initiator(sk, pair[1]), RatchetState.responder(sk, pair)
    steps = [alice.encrypt_step() for _ in range(4)]
    assert bob.commit(steps[3][0], NOW) == steps[3][1]  # skips keys 0, 1 and 2
    bob.drop_oldest_skipped()
    with pytest.raises(RatchetError):
        bob.commit(steps[0][0], NOW)
    assert bob.commit(steps[2][0], NOW) == steps[2][1]
    bob.drop_oldest_skipped()  # key 1 now
    with pytest.raises(RatchetError):
        bob.commit(steps[1][0], NOW)
    bob.drop_oldest_skipped()  # none left: nothing happens
