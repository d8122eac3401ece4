"""An endpoint hint's port is 1 to 65535 (keys/README.md): anything else is
refused with the ValueError its docstring names, not a packing error. Mutation testing
(bench/MUTATION.md) found the upper bound unpinned."""

from __future__ import annotations

import pytest

from comm_tui.crypto.card import encode_hints_card, read_card
from comm_tui.crypto.identity import Identity

IDENTITY = Identity.from_seed(b"\x07" * 32)
ISSUED = 1_800_000_000


@pytest.mark.parametrize("port", [0, 65536, 70000, -1])
def test_a_port_out_of_range_is_no_hint(port: int) -> None:
    with pytest.raises(ValueError, match="cannot be an endpoint hint"):
        encode_hints_card(IDENTITY, [("192.0.2.1", port)], ISSUED)


@pytest.mark.parametrize("port", [1, 65535])
def test_the_first_and_last_ports_are_hints(port: int) -> None:
    card = read_card(encode_hints_card(IDENTITY, [("192.0.2.1", port)], ISSUED))
    assert card.hints == (("192.0.2.1", port),)
