"""Rules of ``node.py`` that a seeded mutation sample found unpinned (bench/MUTATION.md,
"Fourth round (D)"): each test here is killed by a one-line mutation of its rule, and
drives nodes through their public face in the sans-IO harness (tests/wire.py)."""

from __future__ import annotations

import random

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import FALLBACK_PREKEY_ID, PublicBundle
from comm_tui.crypto.records import RECORD_LIFETIME_S, sign_record
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import echo_of
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.events import PeerRemoved, StoreChanged
from comm_tui.protocol.letters import CHUNK_BYTES
from comm_tui.protocol.node import RECEIPT_DELAY_S, Node, NodeConfig
from comm_tui.protocol.punch import PUNCH_RETRY_S, PUNCH_ROUNDS
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from tests.test_node import fast_config, forge_frame, frames_sent, message_of, stored_messages
from tests.wire import T0, Wire


@pytest.fixture
def wire() -> Wire:
    return Wire()


def test_status_counters_count_every_text_stored_and_received_not_only_the_first(
    wire: Wire,
) -> None:
    """``stored`` and ``texts_received`` (the status panel's figures) grow by one for
    each message a relay stores and each text a recipient completes."""
    a, r, b = wire.add(1, fast_config()), wire.add(2, fast_config()), wire.add(3, fast_config())
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    for text in ("one", "two", "three"):
        a.send_text(b.identity.public, text, T0)
    wire.pump(T0)
    assert r.stats.stored == 3
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 10)
    assert sorted(t.text for t in wire.texts(b)) == ["one", "three", "two"]
    assert b.stats.texts_received == 3


def test_every_copy_of_an_acknowledged_message_is_answered_with_the_ack_and_counted(
    wire: Wire,
) -> None:
    """docs/PROTOCOL.md, "7.3 Acks": a relay holding the ack answers each late copy of the
    message with it, and ``acks_answered`` counts each answer."""
    a, r, b = wire.add(1, fast_config()), wire.add(2, fast_config()), wire.add(3, fast_config())
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    c = wire.add(4)
    wire.connect(c, r)
    a.send_text(b.identity.public, "once", T0)
    wire.pump(T0)
    (entry,) = stored_messages(r)
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 5)
    assert len(wire.texts(b)) == 1 and stored_messages(r) == []
    for i, now in enumerate((T0 + 6, T0 + 7)):
        c.datagrams_to_send()
        r.receive_datagram(
            forge_frame(c, r, pb.Frame(message=message_of(entry)), now), wire.endpoint(c), now
        )
        acks = [f.ack for f in frames_sent(wire, r, c, now) if f.WhichOneof("body") == "ack"]
        assert [ack.message_id for ack in acks] == [entry.item_id]
        assert r.stats.acks_answered == i + 1


def test_a_part_of_an_unfinished_text_is_receipted_to_the_endpoint_it_came_from(
    wire: Wire,
) -> None:
    """Not acknowledged until the whole text is here, but the sender learns this part
    arrived (so it counts no failure against us): the receipt goes back where the part
    came from."""
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "x" * (CHUNK_BYTES + 1), T0)  # two parts
    first, second = stored_messages(a)
    a.datagrams_to_send()
    wire.offline.clear()
    b.datagrams_to_send()
    b.receive_datagram(
        forge_frame(a, b, pb.Frame(message=message_of(first)), T0), wire.endpoint(a), T0
    )
    b.handle_timer(T0 + RECEIPT_DELAY_S)
    receipts = [f.receipt for f in frames_sent(wire, b, a, T0) if f.WhichOneof("body") == "receipt"]
    assert [list(r.ids) for r in receipts] == [[first.key]]
    assert wire.texts(b) == []
    assert second.key not in {i for r in receipts for i in r.ids}


def test_a_fetched_bundle_with_an_unusable_key_is_forgotten_and_the_text_goes_by_fallback(
    wire: Wire,
) -> None:
    """A record its owner signed over a signed prekey that is no usable X25519 key (the
    all-zero point): X3DH on it fails, so the sender forgets the bundle and seals with
    the fallback on the owner's identity key (docs/PROTOCOL.md, "Letters and sealing")."""
    sender, holder = wire.add(1), wire.add(2)
    wire.connect(sender, holder)
    owner = Identity.from_seed(b"\x66" * 32)
    unusable = PublicBundle(owner.key, 1, bytes(32), ())
    issued_ms = int(T0 * 1000)
    record = sign_record(owner, unusable, issued_ms, issued_ms + int(RECORD_LIFETIME_S * 1000))
    held = Entry(Kind.RECORD, owner.address, owner.address, record.expires_ms, record, stored_at=T0)
    holder._store.add(held, enforce_quota=False)
    assert sender.fetch_bundle(owner.address, T0)
    wire.pump(T0)
    assert sender._directory.bundle_to_start_with(owner.address, T0) == unusable
    sender.send_text(owner.public, "by fallback", T0 + 1)
    assert owner.address not in sender._directory.known_bundles
    session = sender._sessions.active(owner.key)
    assert session is not None and session.pending_init == (FALLBACK_PREKEY_ID, 0)
    assert session.active_at == T0 + 1
    (message,) = stored_messages(sender)
    assert message.target == owner.address


def test_a_find_node_answer_is_counted_as_nodes_sent(wire: Wire) -> None:
    """Each datagram sent is counted under its frame's kind (the status panel's figures,
    and what the cookie memory keys on): a FindNode's answer under ``nodes``."""
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    before = b.stats.sent_by_kind["nodes"]
    find = pb.FindNode(query_id=bytes(16), target=Identity.from_seed(b"\x44" * 32).address)
    b.receive_datagram(forge_frame(a, b, pb.Frame(find_node=find), T0), wire.endpoint(a), T0)
    answers = [f for f in frames_sent(wire, b, a, T0) if f.WhichOneof("body") == "nodes"]
    assert len(answers) == 1
    assert b.stats.sent_by_kind["nodes"] == before + 1
    kinds = {field.name for field in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert set(b.stats.sent_by_kind) <= kinds


def test_a_lookup_of_another_node_asks_nobody_for_what_waits_for_us(wire: Wire) -> None:
    """Only our own lookup (joining) ends by asking the nodes it met for what waits for us
    (Fetch) and offering them our record; a lookup of anyone else ends quietly."""
    a, b, c, d = (wire.add(seed) for seed in (1, 2, 3, 4))
    for other in (b, c, d):
        wire.connect(a, other)
    assert a.joined
    fetches = a.stats.sent_by_kind["fetch"]
    queries = a.stats.sent_by_kind["find_node"]
    a.lookup(Identity.from_seed(b"\x44" * 32).address, T0 + 1)
    wire.pump(T0 + 1)
    assert a.stats.sent_by_kind["find_node"] > queries  # the lookup asked
    assert a.stats.sent_by_kind["fetch"] == fetches


def test_an_ack_every_holder_has_is_settled_and_not_sent_again(wire: Wire) -> None:
    """docs/PROTOCOL.md, "7.3 Acks": an ack goes back until each node owed it holds it;
    once the sender's receipt says it does, the relay stops sending it."""
    a, r, b = wire.add(1, fast_config()), wire.add(2, fast_config()), wire.add(3, fast_config())
    wire.connect(a, r)
    wire.connect(b, r)
    text_id = a.send_text(b.identity.public, "settle", T0)
    wire.run(T0, T0 + 5)
    assert wire.states(a, text_id)[-1] == "delivered"
    (ack,) = [e for e in r._store if e.kind is Kind.ACK]
    assert ack.settled is True
    sent = r.stats.sent_by_kind["ack"]
    wire.run(T0 + 5, T0 + 120)
    assert r.stats.sent_by_kind["ack"] == sent


def test_receipts_owed_in_one_pump_split_before_their_ids_pass_1000_bytes(wire: Wire) -> None:
    """docs/PROTOCOL.md, "Receipts go one per peer per pump": the ids of one Receipt, each
    counted with its 2 bytes of tag and length, never pass RECEIPT_IDS_BYTES. 42 records
    (21-byte keys, 966 bytes) and one message (a 33-byte key: 1,001) make two Receipts."""
    a, r, b = wire.add(1, fast_config()), wire.add(2, fast_config()), wire.add(3, fast_config())
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "held", T0)
    wire.settle(T0)  # r's receipt for the message goes
    (message,) = stored_messages(r)
    records = []
    for i in range(42):
        owner = Identity.from_seed(bytes([0x80 + i]) * 32)
        prekey = bytes(Identity.from_seed(bytes([i]) * 32).public.box_key)
        bundle = PublicBundle(owner.key, 1, prekey, ())
        issued_ms = int(T0 * 1000)
        record = sign_record(owner, bundle, issued_ms, issued_ms + int(RECORD_LIFETIME_S * 1000))
        records.append(record)
        expires_ms = record.expires_ms
        entry = Entry(Kind.RECORD, owner.address, owner.address, expires_ms, record, stored_at=T0)
        r._store.add(entry, enforce_quota=False)
    a.datagrams_to_send()
    now = T0 + 1
    for record in records:  # each a duplicate: receipted, never stored again
        frame = pb.Frame(record=pb.Record(bundle=record))
        r.receive_datagram(forge_frame(a, r, frame, now), wire.endpoint(a), now)
    frame = pb.Frame(message=message_of(message))
    r.receive_datagram(forge_frame(a, r, frame, now), wire.endpoint(a), now)
    r.handle_timer(now + RECEIPT_DELAY_S)  # the id over the limit waits its delay
    receipts = [
        f.receipt for f in frames_sent(wire, r, a, now) if f.WhichOneof("body") == "receipt"
    ]
    assert [len(receipt.ids) for receipt in receipts] == [42, 1]
    assert list(receipts[1].ids) == [message.key]


def test_a_table_peer_speaking_from_a_new_endpoint_is_moved_there_once_proven(
    wire: Wire,
) -> None:
    """A known node whose NAT mapping changed is challenged at its new endpoint; once it
    answered there, its table entry moves to it (docs/PROTOCOL.md, "5.1")."""
    b, p = wire.add(1), wire.add(2)
    wire.connect(p, b)
    old = wire.endpoint(p)
    new: Endpoint = ("10.2.0.9", 4100)  # the same host's NAT, a new mapping
    wire.nodes[new] = wire.nodes.pop(old)
    wire.events[new] = wire.events.pop(old)
    now = T0 + 1
    ping = pb.Frame(ping=pb.Ping(challenge=bytes(range(16))))
    b.receive_datagram(forge_frame(p, b, ping, now), new, now)
    wire.pump(now)
    known = b._table.get(p.address)
    assert known is not None and known.endpoint == new
    assert b.stats.rejected_total == 0


def test_past_the_new_key_budget_each_network_has_its_own_allowance_for_cookies(
    wire: Wire,
) -> None:
    """docs/PROTOCOL.md, "5.3": under a flood of first contacts, a newcomer that echoes its
    cookie is admitted within its network's allowance: one network spending its own
    leaves another's whole."""
    config = NodeConfig(new_key_rate_per_s=0.0, new_key_burst=0.0)
    config.new_key_net_rate_per_s, config.new_key_net_burst = 0.0, 2.0
    relay = wire.add(1, config)
    crowd = [("10.50.0.1", 4000), ("10.50.0.2", 4000), ("10.50.0.3", 4000)]
    elsewhere: Endpoint = ("10.60.0.1", 4000)
    newcomers = []
    for seed, endpoint in enumerate([*crowd, elsewhere], start=20):
        node = Node(Identity.from_seed(bytes([seed]) * 32), T0, rng=random.Random(seed))
        wire.nodes[endpoint] = node
        wire.events[endpoint] = []
        wire.persisted[endpoint] = {}
        newcomers.append(node)
    for node in newcomers:
        node.bootstrap(wire.endpoint(relay), T0)
        wire.pump(T0)
    assert relay.stats.rejected["cookie_required"] == 4  # each paid with its cookie
    assert relay.stats.rejected["new_key_rate"] == 1  # the third of 10.50.0.0/24
    admitted = [relay.address in node._table for node in newcomers]
    assert admitted == [True, True, False, True]


def test_a_cookie_reply_echoing_a_request_to_a_table_peer_makes_us_send_nothing(
    wire: Wire,
) -> None:
    """Only what we send to keys outside our table is remembered for a cookie reply: a
    table peer's datagrams never wait for the new-key budget, so it never sends one, and
    remembering what we send it would let it flush the memory by asking (``_sent``)."""
    n, b = wire.add(1), wire.add(2)
    wire.connect(n, b)
    n.lookup(Identity.from_seed(b"\x44" * 32).address, T0 + 1)
    (request,) = [data for data, endpoint in n.datagrams_to_send() if endpoint == wire.endpoint(b)]
    unsolicited = n.stats.rejected["unsolicited"]
    reply = Codec.encode_cookie_reply(b"c" * 16, echo_of(request))
    n.receive_datagram(reply, wire.endpoint(b), T0 + 1)
    assert n.datagrams_to_send() == []
    assert n.stats.rejected["unsolicited"] == unsolicited + 1


def test_a_pong_to_a_hello_is_no_larger_than_the_hello_even_with_a_cookie_attached(
    wire: Wire,
) -> None:
    """docs/PROTOCOL.md, "3.3", "12.1": a hello is answered by a boxed Pong no larger than
    it, with the endpoint we saw only if that fits. The Pong carries the cookie we hold
    for that endpoint (it once told us it was busy), so the cookie is measured too:
    without it the observed endpoint would fit, with it the Pong would pass the hello."""
    a, b = wire.add(1), wire.add(2)
    b.bootstrap(wire.endpoint(a), T0)
    ((hello_of_b, _),) = b.datagrams_to_send()
    busy = Codec.encode_cookie_reply(b"c" * 16, echo_of(hello_of_b))
    b.receive_datagram(busy, wire.endpoint(a), T0)  # a was busy: b keeps its cookie
    ((resent, _),) = b.datagrams_to_send()
    assert pb.Packet.FromString(resent).cookie == b"c" * 16
    a.bootstrap(wire.endpoint(b), T0)
    ((hello, _),) = a.datagrams_to_send()
    b.receive_datagram(hello, wire.endpoint(a), T0)
    codec = Codec(a.identity)
    pongs = [
        (data, frame.pong)
        for data, endpoint in b.datagrams_to_send()
        if endpoint == wire.endpoint(a)
        and (frame := codec.decode(data, T0).frame) is not None
        and frame.WhichOneof("body") == "pong"
    ]
    ((data, pong),) = pongs
    assert pb.Packet.FromString(data).cookie == b"c" * 16
    assert len(data) <= len(hello)
    assert not pong.HasField("observed")  # it did not fit beside the cookie


def test_an_ack_is_filed_under_its_recipient_and_evicted_like_any_item(wire: Wire) -> None:
    """docs/PROTOCOL.md, "7.3 Acks", "8.1 Local caps": the ack that replaces a message is
    filed under the message's recipient (its target), so the store's caps count it
    there and a full store can evict it from its network, farthest target first."""
    config = fast_config()
    config.store_max_items = 3
    a, r, b = wire.add(1, fast_config()), wire.add(2, config), wire.add(3, fast_config())
    c = wire.add(4, fast_config())
    for node in (a, b, c):
        wire.connect(node, r)
    a.send_text(b.identity.public, "acknowledged", T0)
    wire.run(T0, T0 + 3)
    (ack,) = [e for e in r._store if e.kind is Kind.ACK]
    assert ack.target == b.address
    assert [e.kind for e in r._store.for_target(b.address)] == [Kind.ACK]
    wire.offline.add(wire.endpoint(b))
    # Each sender's stem peer is drawn at random: each hands r its texts itself.
    for sender, text, now in ((a, "held", T0 + 4), (a, "held too", T0 + 4), (c, "other", T0 + 5)):
        sender.send_text(b.identity.public, text, now)
        sender.datagrams_to_send()
        own = [e for e in stored_messages(sender) if e.own_text_id][-1]
        handed = forge_frame(sender, r, pb.Frame(message=message_of(own)), now)
        r.receive_datagram(handed, wire.endpoint(sender), now)
        wire.pump(now)
        if sender is a and text == "held too":
            assert len(r._store) == 3  # the ack and two messages, two of them from a's network
    assert r.stats.rejected_total == 0
    assert len(r._store) == 3 and r._store.evicted == 1
    assert any(e.origin == c.address for e in r._store)


def test_once_its_text_is_acknowledged_a_contact_is_asked_for_no_more(wire: Wire) -> None:
    """docs/PROTOCOL.md, "12.6": a hole is punched to a contact out of reach only while a
    text of ours waits for its ack; once acknowledged (through relays), its next round of
    Introduce is not sent."""
    a, r = wire.add(1, fast_config()), wire.add(2, fast_config())
    wire.connect(a, r)
    bob = Identity.from_seed(b"\x77" * 32)  # a contact no table of ours holds
    a.set_contacts([bob.key], T0)
    text_id = a.send_text(bob.public, "through relays", T0)
    wire.pump(T0)
    asked = a.stats.sent_by_kind["introduce"]
    assert asked >= 1  # the first round went out with the text
    (entry,) = stored_messages(a)
    ack = sign_ack(bob, entry.item_id, entry.expires_ms)
    a.receive_datagram(forge_frame(r, a, pb.Frame(ack=ack), T0 + 1), wire.endpoint(r), T0 + 1)
    wire.pump(T0 + 1)
    assert wire.states(a, text_id)[-1] == "delivered"
    wire.run(T0 + 2, T0 + 60)  # past every round PUNCH_RETRY_S would bring
    assert a.stats.sent_by_kind["introduce"] == asked


# ------------------------------------------------- fifth round (h-mut5, main 1267de7)


def test_a_table_peer_that_says_it_is_a_client_leaves_the_table() -> None:
    """docs/PROTOCOL.md, "12.3": a client never sits in a table, and a table peer that
    starts flagging its frames as a client's is taken out (PeerRemoved) at once."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    assert b.address in a._table
    a.drain_events()
    now = T0 + 1
    frame = pb.Frame(client=True, fetch=pb.Fetch())
    a.receive_datagram(forge_frame(b, a, frame, now), wire.endpoint(b), now)
    assert b.address not in a._table
    assert [e.key for e in a.drain_events() if isinstance(e, PeerRemoved)] == [b.identity.key]


def test_relay_usage_reports_the_item_cap_it_enforces() -> None:
    node = Node(Identity.from_seed(bytes(32)), T0, config=NodeConfig(store_max_items=123))
    usage = node.relay_usage()
    assert usage.items_cap == 123 and usage.items_held == 0


def test_a_holders_receipt_for_our_own_part_is_persisted_as_bookkeeping() -> None:
    """docs/PROTOCOL.md, "8.2 Local durability": a new holder of our own part changes
    its relay schedule only; the entry is persisted (for the outbox and custody shown
    after a restart) but flagged as bookkeeping, which no datagram waits on."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.send_text(Identity.generate().public, "held by b", T0)
    a.drain_events()  # the part's first write
    wire.events[wire.endpoint(a)].clear()
    wire.settle(T0)
    (part,) = [e for e in a._store if e.kind is Kind.MESSAGE]
    assert part.holders == {b.address}
    changes = [e for e in wire.of(a, StoreChanged) if isinstance(e, StoreChanged)]
    assert any(part.key in c.put for c in changes)
    assert all(part.key in c.bookkeeping for c in changes if part.key in c.put)


def test_a_nodes_answer_skips_a_peer_at_a_host_name_and_still_lists_the_rest() -> None:
    """A table peer whose endpoint is no plain IP address has no NodeInfo: it is left out
    of NODES answers, and the nodes after it are still listed."""
    wire = Wire()
    hub, asker = wire.add(1), wire.add(2)
    named = Node(Identity.from_seed(bytes([3]) * 32), T0, rng=random.Random(3))
    wire.nodes[("peer.example", 4000)] = named
    wire.events.setdefault(("peer.example", 4000), [])
    wire.persisted.setdefault(("peer.example", 4000), {})
    others = [wire.add(seed) for seed in range(4, 8)]
    for node in [named, asker, *others]:
        wire.connect(node, hub)
    now = T0 + 1
    find = pb.FindNode(query_id=bytes(16), target=named.address)  # the named peer first
    hub.receive_datagram(
        forge_frame(asker, hub, pb.Frame(find_node=find), now), wire.endpoint(asker), now
    )
    (answer,) = [f.nodes for f in frames_sent(wire, hub, asker, now) if f.HasField("nodes")]
    listed = {info.key for info in answer.nodes}
    assert named.identity.key not in listed
    assert listed == {node.identity.key for node in others}


def test_a_stem_retry_sends_no_second_copy_to_the_recipient_within_its_receipt_wait() -> None:
    """docs/PROTOCOL.md, "7.2", "Receipt wait": the sender's own text goes to the stem
    peer and straight to a recipient it knows; at a retry before their receipts could
    have come back, neither is sent a second copy (a duplicate, not a retry)."""
    wire = Wire()
    config = fast_config(backoff_base_s=0.5, backoff_max_s=0.5)
    a, b, c = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, b)
    wire.connect(a, c)
    a_end = wire.endpoint(a)
    wire.drop = lambda source, dest, data: dest == a_end  # the receipts are late
    a.send_text(b.identity.public, "one copy each", T0)
    wire.pump(T0)
    (part,) = [e for e in a._store if e.kind is Kind.MESSAGE]
    assert part.stem and part.attempts == 1
    sent = a.stats.sent_by_kind["message"]
    wire.tick(T0 + 0.6)  # the retry, within the 2 s receipt wait
    assert part.attempts == 2
    assert a.stats.sent_by_kind["message"] == sent and a.stats.resends_held == 2


def test_the_recipient_holding_a_part_is_still_sent_it_at_each_retry_of_the_stem() -> None:
    """Our own text goes straight to a recipient we know at each attempt, even one that
    holds the part (its receipt for a part of an unfinished text): only its ack ends the
    text, and the copy is what makes it answer with one."""
    wire = Wire()
    config = fast_config(backoff_base_s=3.0, backoff_max_s=3.0)
    a, b, c = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, b)
    wire.connect(a, c)
    reader = Codec(b.identity)
    a_end, b_end, c_end = wire.endpoint(a), wire.endpoint(b), wire.endpoint(c)
    to_b: list[bytes] = []

    def drop(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if c_end in (source, dest):
            return True  # c takes no part
        if (source, dest) != (a_end, b_end):
            return False
        sent_s = int.from_bytes(pb.Packet.FromString(data).boxed[:8], "big") / 1000
        frame = reader.decode(data, sent_s).frame
        if frame is None or frame.WhichOneof("body") != "message":
            return False
        to_b.append(frame.message.sealed)
        return frame.message.sealed != to_b[0]  # b gets the first part only

    wire.drop = drop
    a.send_text(b.identity.public, "x" * (CHUNK_BYTES + 10), T0)
    wire.settle(T0)
    parts = [e for e in a._store if e.kind is Kind.MESSAGE]
    assert sorted(b.address in part.holders for part in parts) == [False, True]
    to_b.clear()
    wire.tick(T0 + 3.1)  # the retry
    assert all(part.attempts == 2 for part in parts)
    assert len(to_b) == 2 and len(set(to_b)) == 2  # both parts, the one it holds too


def test_a_lookup_asks_a_table_peer_without_padding() -> None:
    """docs/PROTOCOL.md, "5.1", "First contact": only a FindNode to a node outside our
    table is padded (its answer must fit 3x the request before validation); a table
    peer has validated us, so its FindNode carries no padding."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    now = T0 + 1
    a.datagrams_to_send()
    a.lookup(Identity.generate().address, now)
    finds = [f.find_node for f in frames_sent(wire, a, b, now) if f.HasField("find_node")]
    assert finds and all(find.padding == b"" for find in finds)


def test_an_unanswered_hello_is_given_up_when_its_timer_fires() -> None:
    """A hello nobody answers is forgotten at its deadline, the moment its timer fires
    (not at a later timer): the node says "no peers", not "bootstrapping"."""
    node = Node(Identity.from_seed(bytes([1]) * 32), T0, rng=random.Random(1))
    node.bootstrap(("10.99.0.1", 4000), T0)
    node.datagrams_to_send()
    assert node.state == "bootstrapping"
    deadline = node.get_timer()
    node.handle_timer(deadline)
    assert node.state == "no peers"
    assert node.get_timer() > deadline


def test_a_text_waiting_for_a_node_goes_to_it_as_soon_as_it_enters_the_table() -> None:
    """What we hold for a node is pushed to it when it enters our table, without waiting
    for its Fetch (dropped here) or the item's next retry (a minute off); it meets no
    other holder."""
    wire = Wire()
    config = fast_config(backoff_base_s=60.0, backoff_max_s=60.0)
    a, c = wire.add(1, config), wire.add(3, config)
    wire.connect(a, c)
    b = wire.add(2, config)
    a.send_text(b.identity.public, "waits for b", T0)
    wire.pump(T0)
    reader = Codec(a.identity)
    a_end, b_end, c_end = wire.endpoint(a), wire.endpoint(b), wire.endpoint(c)

    def no_fetch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if {source, dest} == {b_end, c_end}:
            return True  # b meets only a
        if (source, dest) != (b_end, a_end):
            return False
        sent_s = int.from_bytes(pb.Packet.FromString(data).boxed[:8], "big") / 1000
        frame = reader.decode(data, sent_s).frame
        return frame is not None and frame.WhichOneof("body") == "fetch"

    wire.drop = no_fetch
    assert wire.texts(b) == []
    wire.connect(b, a, T0 + 1)
    assert [t.text for t in wire.texts(b)] == ["waits for b"]


def test_after_its_last_round_of_introduce_a_contact_is_looked_up_no_more(wire: Wire) -> None:
    """docs/PROTOCOL.md, "12.6": after PUNCH_ROUNDS rounds a contact's hole punching is
    given up (the relays carry every text); though our text still waits, its
    neighbourhood is not looked up again once its want is dropped."""
    a, r = wire.add(1, fast_config()), wire.add(2, fast_config())
    wire.connect(a, r)
    bob = Identity.from_seed(b"\x77" * 32)  # a contact no table of ours holds
    a.set_contacts([bob.key], T0)
    reader = Codec(r.identity)
    a_end, r_end = wire.endpoint(a), wire.endpoint(r)
    targets: list[tuple[float, bytes]] = []

    def note_finds(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if (source, dest) == (a_end, r_end):
            sent_s = int.from_bytes(pb.Packet.FromString(data).boxed[:8], "big") / 1000
            frame = reader.decode(data, sent_s).frame
            if frame is not None and frame.HasField("find_node"):
                targets.append((sent_s, frame.find_node.target))
        return False

    wire.drop = note_finds
    a.send_text(bob.public, "never acknowledged", T0)
    wire.pump(T0)
    # Rounds 5, 10, 20, 40 s apart; the want falls due once more 80 s after the last.
    last_round = T0 + PUNCH_RETRY_S * (2 ** (PUNCH_ROUNDS - 1) - 1)
    wire.run(T0 + 1, last_round + 1)
    assert any(target == bob.address for _, target in targets)  # its rounds looked it up
    targets.clear()
    wire.run(last_round + 2, last_round + 200)  # past the due time, when it is dropped
    assert [t for t in targets if t[1] == bob.address] == []
