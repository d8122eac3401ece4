"""Prekey records over real UDP on 127.0.0.1 with SQLite stores (docs/PROTOCOL.md, "8a").

An owner publishes its bundle and goes away; the relays that hold its record are
restarted from their databases; a sender that was never online with the owner still
fetches the bundle from them.
"""

from __future__ import annotations

import os
import time

import pytest

from comm_tui.crypto.prekeys import PublicBundle
from comm_tui.protocol.relay_store import Kind
from tests.test_integration import Network, Peer, first_hop, net, until

__all__ = ["net"]  # the fixture, shared with tests/test_integration.py

pytestmark = pytest.mark.timeout(60)


def record_holders(network: Network, owner: Peer) -> list[Peer]:
    return [
        p
        for p in network.running()
        if p.name.startswith("relay")
        and p.running.node._store.get(Kind.RECORD, owner.identity.address) is not None
    ]


async def test_bundle_is_fetched_from_restarted_relays_while_its_owner_is_away(
    net: Network,
) -> None:
    sender, owner = net.peers["sender"], net.peers["recipient"]
    await net.start(owner, first_hop(net))
    await until(lambda: owner.running.node.state == "online", "the owner to join")
    public = PublicBundle(
        owner.identity.key, 3, os.urandom(32), tuple((i + 1, os.urandom(32)) for i in range(16))
    )
    owner.running.node.set_own_bundle(public, time.time())
    assert owner.running.protocol is not None
    owner.running.protocol.pump()  # persist, then send, as the service does
    await until(lambda: len(record_holders(net, owner)) >= 3, "relays to hold the record")
    await net.stop(owner)
    await net.stop(sender)
    keeper = record_holders(net, owner)[0]
    for peer in net.running():
        await net.stop(peer)
    await net.start(keeper, [])
    assert record_holders(net, owner) == [keeper], "the record was not restored from disk"
    await net.start(sender, [keeper.endpoint])
    node = sender.running.node
    await until(lambda: node.state == "online", "the sender to join")
    assert node.fetch_bundle(owner.identity.address, time.time())
    assert sender.running.protocol is not None
    sender.running.protocol.pump()
    await until(lambda: owner.identity.address in node._directory.known_bundles, "the bundle")
    assert node._directory.known_bundles[owner.identity.address] == public
