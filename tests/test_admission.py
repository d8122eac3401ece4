"""Admission before proof (``protocol/admission.py``, docs/PROTOCOL.md, "Admission").

Address validation, the amplification credit of unvalidated pairs and the cookies of
a busy node are each a rule an attacker probes: a challenge or cookie that verifies for
another key, endpoint or after its lifetime, credit beyond three times what arrived or
beyond its cap, or tables without bound. The node tests reach these only through whole
exchanges; mutation testing (bench/MUTATION.md) showed a changed bound or rotation went
unnoticed there, so each is pinned here through the classes' own methods.
"""

from __future__ import annotations

import pytest

from comm_tui.protocol import admission
from comm_tui.protocol.admission import (
    AMPLIFICATION_FACTOR,
    CHALLENGE_BYTES,
    CHALLENGE_ROTATE_S,
    COOKIE_BYTES,
    COOKIE_ROTATE_S,
    CREDIT_PAIRS,
    ECHO_BYTES,
    MAX_CREDIT_BYTES,
    VALIDATED_PAIRS,
    VALIDATED_PER_NETWORK,
    VALIDATED_PER_WIDE_NETWORK,
    AddressValidator,
    CookieJar,
    RotatingMac,
    echo_of,
    wide_network,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
HERE = ("192.0.2.1", 4000)


def test_the_constants_are_the_specs() -> None:
    """docs/PROTOCOL.md, "Admission": three times what arrived, capped at 3 x 64 KiB."""
    assert AMPLIFICATION_FACTOR == 3
    assert MAX_CREDIT_BYTES == 3 * 64 * 1024
    assert (COOKIE_BYTES, ECHO_BYTES, CHALLENGE_BYTES) == (16, 16, 16)
    assert (COOKIE_ROTATE_S, CHALLENGE_ROTATE_S) == (120.0, 10.0)


def test_a_tag_lasts_one_to_two_periods_of_its_secret() -> None:
    mac = RotatingMac(10.0, 16, now=0.0)
    tag = mac.tag(b"data", 0.0)
    assert len(tag) == 16
    assert mac.verify(b"data", tag, 9.9)
    assert not mac.verify(b"other data", tag, 9.9)
    assert not mac.verify(b"data", bytes(16), 9.9)
    assert mac.verify(b"data", tag, 10.0)  # rotated: the previous secret still verifies
    assert mac.verify(b"data", tag, 19.9)
    assert not mac.verify(b"data", tag, 20.0)  # rotated again: gone


def test_after_two_idle_periods_no_earlier_tag_verifies() -> None:
    """A rotation late by two periods or more makes the previous secret stale too."""
    mac = RotatingMac(10.0, 16, now=0.0)
    tag = mac.tag(b"data", 5.0)
    assert not mac.verify(b"data", tag, 20.0)
    fresh = RotatingMac(10.0, 16, now=0.0)
    tag = fresh.tag(b"data", 0.0)
    assert fresh.verify(b"data", tag, 19.9)  # one rotation, within two periods: good


def test_rotation_counts_time_since_the_last_rotation_on_a_real_clock() -> None:
    """The same lifetimes with the node's clock (Unix seconds), not one starting at 0."""
    start = 1_800_000_000.0
    mac = RotatingMac(10.0, 16, now=start)
    tag = mac.tag(b"data", start)
    assert mac.verify(b"data", tag, start + 10.0)  # one rotation: still good
    assert mac.verify(b"data", tag, start + 19.9)
    assert not mac.verify(b"data", tag, start + 20.0)


def test_two_macs_never_share_a_secret() -> None:
    one, two = RotatingMac(10.0, 16, 0.0), RotatingMac(10.0, 16, 0.0)
    assert not two.verify(b"data", one.tag(b"data", 0.0), 0.0)
    # ... nor after a rotation, whose new secrets are fresh as well.
    assert one.tag(b"data", 10.0) != two.tag(b"data", 10.0)


def test_a_challenge_validates_only_its_key_at_its_endpoint() -> None:
    validator = AddressValidator(0.0)
    challenge = validator.challenge(KEY, HERE, 0.0)
    assert len(challenge) == CHALLENGE_BYTES
    assert not validator.answered(OTHER_KEY, HERE, challenge, 1.0)
    assert not validator.answered(KEY, ("192.0.2.1", 4001), challenge, 1.0)
    assert not validator.answered(KEY, ("192.0.2.2", 4000), challenge, 1.0)
    assert not validator.is_validated(KEY, HERE)
    assert validator.answered(KEY, HERE, challenge, 1.0)
    assert validator.is_validated(KEY, HERE)
    assert not validator.is_validated(OTHER_KEY, HERE)
    assert not validator.is_validated(KEY, ("192.0.2.1", 4001))


def test_a_challenge_expires_within_two_rotations() -> None:
    validator = AddressValidator(0.0)
    challenge = validator.challenge(KEY, HERE, 0.0)
    assert not validator.answered(KEY, HERE, challenge, 2 * CHALLENGE_ROTATE_S)
    assert not validator.is_validated(KEY, HERE)


def test_an_unvalidated_pair_gets_three_times_what_it_sent() -> None:
    validator = AddressValidator(0.0)
    assert not validator.spend(KEY, HERE, 1)  # nothing arrived: nothing goes back
    validator.received(KEY, HERE, 100)
    assert not validator.spend(KEY, HERE, 301)  # refused, and it takes nothing
    assert validator.spend(KEY, HERE, 300)  # all the credit may be spent
    assert not validator.spend(KEY, HERE, 1)
    validator.received(KEY, HERE, 10)
    assert validator.spend(KEY, HERE, 20)
    assert validator.spend(KEY, HERE, 10)
    assert not validator.spend(KEY, HERE, 1)
    validator.received(KEY, HERE, 10)
    assert not validator.spend(KEY, ("192.0.2.9", 4000), 1)  # credit is per pair
    assert not validator.spend(OTHER_KEY, HERE, 1)


def test_what_one_key_sent_from_an_endpoint_pays_nothing_to_another_key_there() -> None:
    """docs/PROTOCOL.md, "5.1" (red5, finding 8): anyone can write a peer's endpoint as
    its source, so what the peer's own datagrams earned there is no credit for answers
    to a forger's requests under another key, and the forger's spending leaves the
    peer's credit whole."""
    validator = AddressValidator(0.0)
    validator.received(KEY, HERE, 1000)
    validator.received(OTHER_KEY, HERE, 40)
    assert not validator.spend(OTHER_KEY, HERE, 121)
    assert validator.spend(OTHER_KEY, HERE, 120)
    assert validator.spend(KEY, HERE, 3000)


def test_credit_is_capped() -> None:
    validator = AddressValidator(0.0)
    for _ in range(100):
        validator.received(KEY, HERE, 1400)  # 3 x 140,000 bytes, over the cap
    assert not validator.spend(KEY, HERE, MAX_CREDIT_BYTES + 1)
    assert validator.spend(KEY, HERE, MAX_CREDIT_BYTES)


def test_credit_is_kept_for_a_bounded_number_of_pairs_least_recent_first() -> None:
    validator = AddressValidator(0.0)
    first, second = (KEY, ("198.51.100.1", 1)), (KEY, ("198.51.100.2", 1))
    validator.received(*first, 10)
    validator.received(*second, 10)
    validator.received(*first, 10)  # first is now the more recent of the two
    for port in range(CREDIT_PAIRS - 2):
        validator.received(KEY, ("203.0.113.1", port), 1)
    assert validator.spend(*second, 30)  # at the bound, the oldest is still kept
    validator.received(OTHER_KEY, ("203.0.113.1", 1), 1)  # one more: "second" goes
    assert validator.spend(*first, 1)
    validator.received(OTHER_KEY, ("203.0.113.1", 2), 1)  # and one more: now "first"
    assert not validator.spend(*first, 1)
    assert validator.spend(KEY, ("203.0.113.1", 0), 3)
    assert validator.spend(OTHER_KEY, ("203.0.113.1", 2), 3)


def test_validated_pairs_are_bounded_per_network_least_recent_first() -> None:
    """docs/PROTOCOL.md, "5.1": a network keeps its ``VALIDATED_PER_NETWORK`` most
    recently validated pairs; another network's pairs are not touched."""
    validator = AddressValidator(0.0)
    validator.validate(OTHER_KEY, HERE)
    validator.validate(KEY, ("203.0.113.1", 0))
    validator.validate(KEY, ("203.0.113.9", 1))
    validator.validate(KEY, ("203.0.113.1", 0))  # validated again: the most recent now
    for port in range(2, VALIDATED_PER_NETWORK):
        validator.validate(KEY, ("203.0.113.1", port))
    assert validator.is_validated(KEY, ("203.0.113.9", 1))  # the network's bound, all kept
    validator.validate(KEY, ("203.0.113.2", 1))  # one more: the least recent goes
    assert not validator.is_validated(KEY, ("203.0.113.9", 1))
    assert validator.is_validated(KEY, ("203.0.113.1", 0))
    assert validator.is_validated(KEY, ("203.0.113.2", 1))
    assert validator.is_validated(OTHER_KEY, HERE)
    assert VALIDATED_PER_NETWORK == 64 and VALIDATED_PAIRS == 16384


def test_a_full_table_forgets_a_pair_of_the_network_holding_the_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``VALIDATED_PAIRS`` the least recent pair of the largest network goes: many
    networks of a few pairs each (an attacker's) evict each other before an honest
    network's single, older pair."""
    monkeypatch.setattr(admission, "VALIDATED_PAIRS", 40)
    validator = AddressValidator(0.0)
    validator.validate(OTHER_KEY, HERE)  # the oldest pair, alone in its network
    for i in range(13):  # 13 networks of 3 pairs: 39 more, 40 in all
        for port in range(3):
            validator.validate(KEY, (f"198.18.{i}.1", port))
    assert validator.is_validated(KEY, ("198.18.0.1", 0))
    validator.validate(KEY, ("198.18.99.1", 0))  # 41: one goes, from a 3-pair network
    assert validator.is_validated(OTHER_KEY, HERE)
    assert not validator.is_validated(KEY, ("198.18.0.1", 0))
    assert validator.is_validated(KEY, ("198.18.0.1", 1))
    for i in range(13):  # a second pair from each of 13 fresh networks
        validator.validate(KEY, (f"198.18.{100 + i}.1", 0))
    assert validator.is_validated(OTHER_KEY, HERE)


def test_a_wide_network_is_an_ipv4_16_or_an_ipv6_32() -> None:
    """docs/PROTOCOL.md, "5.2 Peer-triggered state"."""
    assert wide_network(("198.18.5.7", 1)) == wide_network(("198.18.200.1", 9)) == "198.18.0.0/16"
    assert wide_network(("198.18.5.7", 1)) != wide_network(("198.19.5.7", 1))
    assert wide_network(("::ffff:198.18.5.7", 1)) == "198.18.0.0/16"
    assert wide_network(("2001:db8:1:2::1", 1)) == wide_network(("2001:db8:ffff::9", 1))
    assert wide_network(("2001:db8::1", 1)) == "2001:db8::/32"
    assert wide_network(("2001:db9::1", 1)) != wide_network(("2001:db8::1", 1))
    assert wide_network(("127.0.0.1", 4000)) != wide_network(("127.0.0.1", 4001))
    assert wide_network(("node.example", 1)) == "host:node.example"
    assert VALIDATED_PER_WIDE_NETWORK == 1024


def test_a_wide_network_keeps_its_bound_from_its_largest_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "5.1": past ``VALIDATED_PER_WIDE_NETWORK`` pairs in a wide
    network, the least recent pair of its network holding the most goes: an honest /48
    of a provider whose other /48s flood keeps its pair."""
    monkeypatch.setattr(admission, "VALIDATED_PER_WIDE_NETWORK", 12)
    validator = AddressValidator(0.0)
    validator.validate(OTHER_KEY, ("2001:db8:ffff::1", 1))  # the honest /48, oldest
    flood = [(f"2001:db8:{i:x}::1", port) for i in range(4) for port in range(3)]
    flood += [(f"2001:db8:{i:x}::1", 0) for i in range(4, 9)]  # 4 /48s of 3, 5 of 1
    for at in flood:
        validator.validate(KEY, at)
    assert validator.is_validated(OTHER_KEY, ("2001:db8:ffff::1", 1))
    kept = [at for at in flood if validator.is_validated(KEY, at)]
    assert len(kept) == 11  # the bound, with the honest pair
    assert kept[-5:] == flood[-5:]  # the single pairs: the 3-pair /48s lost theirs


def test_a_full_table_forgets_from_the_wide_network_holding_the_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``VALIDATED_PAIRS``, the wide network holding the most loses a pair: the
    many /48s of one /32 (a pair each, as many networks of origin as honest peers'
    own) flush none of the honest pairs of other wide networks."""
    monkeypatch.setattr(admission, "VALIDATED_PAIRS", 40)
    validator = AddressValidator(0.0)
    honest = [(bytes([i]) * 32, (f"192.0.{i}.1", 4000)) for i in range(1, 9)]
    for key, at in honest:  # 8 honest peers, of a wide network each: the oldest pairs
        validator.validate(key, (at[0].replace("192.0", f"{10 + key[0]}.0"), at[1]))
    for i in range(200):  # 200 /48s of one /32, a pair each
        validator.validate(KEY, (f"2001:db8:{i:x}::1", 0))
    for key, at in honest:
        assert validator.is_validated(key, (at[0].replace("192.0", f"{10 + key[0]}.0"), at[1]))
    assert validator.is_validated(KEY, ("2001:db8:c7::1", 0))
    assert not validator.is_validated(KEY, ("2001:db8:0::1", 0))


def test_a_cookie_is_bound_to_its_source_address_and_rotates() -> None:
    jar = CookieJar(0.0)
    cookie = jar.cookie(HERE, 0.0)
    assert len(cookie) == COOKIE_BYTES
    assert jar.check(HERE, cookie, COOKIE_ROTATE_S)
    assert not jar.check(("192.0.2.1", 4001), cookie, 1.0)
    assert not jar.check(("192.0.2.2", 4000), cookie, 1.0)
    assert not CookieJar(0.0).check(HERE, cookie, 1.0)  # another node's secret
    assert not jar.check(HERE, cookie, 2 * COOKIE_ROTATE_S)


def test_the_echo_is_a_hash_of_the_whole_packet() -> None:
    echo = echo_of(b"packet")
    assert len(echo) == ECHO_BYTES
    assert echo == echo_of(b"packet")
    assert echo != echo_of(b"packet!")
