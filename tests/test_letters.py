"""Tests for letters: splitting texts, fixed-size padding, the worst-case datagram
size, and the bounded reassembler (order, duplicates, caps and timeouts).
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PrekeyStore
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import MAX_DATAGRAM_BYTES, Codec
from comm_tui.protocol.letters import (
    CHUNK_BYTES,
    LETTER_BYTES,
    MAX_PARTS,
    MAX_TEXT_BYTES,
    REASSEMBLY_MAX_TEXTS,
    REASSEMBLY_MAX_TEXTS_PER_SENDER,
    REASSEMBLY_TIMEOUT_S,
    TEXT_ID_BYTES,
    Completed,
    LetterError,
    Reassembler,
    decode_letter,
    encode_letter,
    encode_read_letter,
    split_text,
)
from comm_tui.protocol.node import SEALED_BYTES
from comm_tui.protocol.sessions import SessionBook
from tests.wire import T0, Wire

NOW = 1_800_000_000.0
SENDER = b"s" * 32
UINT64_MAX = 2**64 - 1


def letters_of(text: str, text_id: bytes = b"t" * TEXT_ID_BYTES) -> list[pb.Letter]:
    chunks = split_text(text)
    return [
        decode_letter(encode_letter(text_id, i, len(chunks), 1234, chunk))
        for i, chunk in enumerate(chunks)
    ]


def reassemble(letters: list[pb.Letter], reassembler: Reassembler | None = None) -> Completed:
    reassembler = reassembler or Reassembler()
    done = None
    for i, letter in enumerate(letters):
        done = reassembler.add(SENDER, letter, NOW, tag=letter.part)
        if i < len(letters) - 1:
            assert done is None
    assert done is not None
    return done


# ---------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hi",
        "x" * CHUNK_BYTES,
        "x" * (CHUNK_BYTES + 1),
        "é" * 5000,
        "€" * (MAX_TEXT_BYTES // 3),
        "😀" * (MAX_TEXT_BYTES // 4),
        "a" * MAX_TEXT_BYTES,
    ],
)
def test_split_and_reassemble_round_trip(text: str) -> None:
    letters = letters_of(text)
    assert len(letters) <= MAX_PARTS
    done = reassemble(letters)
    assert done.text == text
    assert done.tags == tuple(range(len(letters)))
    assert done.sent_ms == 1234


def test_multibyte_characters_straddle_part_boundaries() -> None:
    text = "a" + "€" * 2000  # 1 + 6000 bytes: every boundary cuts a 3-byte character
    chunks = split_text(text)
    assert any(_not_utf8(chunk) for chunk in chunks)
    assert reassemble(letters_of(text)).text == text


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@given(st.text(max_size=3000))
@settings(max_examples=60, deadline=None)
def test_any_text_round_trips(text: str) -> None:
    assert reassemble(letters_of(text)).text == text


def test_text_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("a" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(ValueError):
        split_text("€" * (MAX_TEXT_BYTES // 3 + 1))


def test_every_chunk_fits_and_every_letter_has_the_same_size() -> None:
    chunks = split_text("€" * (MAX_TEXT_BYTES // 3))
    assert all(len(c) <= CHUNK_BYTES for c in chunks)
    sizes = {len(encode_letter(b"t" * 16, i, len(chunks), 0, c)) for i, c in enumerate(chunks)}
    assert sizes == {LETTER_BYTES}


def test_worst_case_letter_fits() -> None:
    letter = encode_letter(
        b"\xff" * TEXT_ID_BYTES, MAX_PARTS - 1, MAX_PARTS, UINT64_MAX, b"\xff" * CHUNK_BYTES
    )
    assert len(letter) == LETTER_BYTES
    assert decode_letter(letter).chunk == b"\xff" * CHUNK_BYTES


def test_oversized_chunk_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_letter(b"t" * 16, 0, 1, UINT64_MAX, bytes(LETTER_BYTES))


def test_worst_case_sealed_message_datagram_fits() -> None:
    """A full chunk, sealed, with the longest expiry and the stem flag, boxed with a cookie."""
    sender = Identity.from_seed(b"\x05" * 32)
    recipient = Identity.from_seed(b"\x06" * 32)
    letter = encode_letter(
        b"\xff" * TEXT_ID_BYTES, MAX_PARTS - 1, MAX_PARTS, UINT64_MAX, b"\xff" * CHUNK_BYTES
    )
    book = SessionBook(sender, PrekeyStore(sender.key, NOW))
    (sealed,) = book.seal_text(recipient.public, [letter], None, NOW)
    assert len(sealed) == SEALED_BYTES
    codec = Codec(sender)
    for stem in (False, True):
        msg = pb.Message(recipient=b"\xff" * 20, expires_ms=UINT64_MAX, sealed=sealed, stem=stem)
        data = codec.encode_frame(recipient.key, pb.Frame(message=msg), NOW, cookie=b"c" * 16)
        assert len(data) <= MAX_DATAGRAM_BYTES


def test_sealed_size_is_fixed_whatever_the_text() -> None:
    sender = Identity.from_seed(b"\x05" * 32)
    recipient = Identity.from_seed(b"\x06" * 32).public
    book = SessionBook(sender, PrekeyStore(sender.key, NOW))
    sizes = {
        len(sealed)
        for chunk in (b"", b"a", b"b" * CHUNK_BYTES)
        for sealed in book.seal_text(
            recipient, [encode_letter(b"t" * 16, 0, 1, 0, chunk)], None, NOW
        )
    }
    assert sizes == {SEALED_BYTES}


# ---------------------------------------------------------------- decoding


def test_decode_rejects_wrong_size_and_bad_padding() -> None:
    good = encode_letter(b"t" * 16, 0, 1, 0, b"hello")
    with pytest.raises(LetterError):
        decode_letter(good[:-1])
    with pytest.raises(LetterError):
        decode_letter(good + b"\x00")
    with pytest.raises(LetterError):
        decode_letter(good[:-1] + b"\x01")  # non-zero padding
    with pytest.raises(LetterError):
        decode_letter(b"\xff\xff" + good[2:])  # length beyond the letter


@pytest.mark.parametrize(
    ("text_id", "part", "parts"),
    [
        (b"short", 0, 1),
        (b"t" * 16, 0, 0),
        (b"t" * 16, 1, 1),
        (b"t" * 16, 0, MAX_PARTS + 1),
    ],
)
def test_decode_rejects_fields_out_of_range(text_id: bytes, part: int, parts: int) -> None:
    with pytest.raises(LetterError):
        decode_letter(encode_letter(text_id, part, parts, 0, b"x"))


def test_every_byte_flip_of_a_letter_raises_only_letter_error() -> None:
    good = encode_letter(b"t" * 16, 2, 5, 99, b"hello world")
    for position in range(len(good)):
        flipped = bytearray(good)
        flipped[position] ^= 0xFF
        with contextlib.suppress(LetterError):
            decode_letter(bytes(flipped))


# ---------------------------------------------------------------- reassembly


def test_out_of_order_parts() -> None:
    text = "".join(chr(0x41 + i % 26) for i in range(CHUNK_BYTES * 5 + 7))
    letters = letters_of(text)
    random.Random(3).shuffle(letters)
    done = reassemble(letters)
    assert done.text == text
    assert done.tags == tuple(range(6))  # tags come back in part order


def test_duplicate_parts_do_not_complete_early_or_twice() -> None:
    letters = letters_of("z" * (CHUNK_BYTES * 3))
    reassembler = Reassembler()
    assert reassembler.add(SENDER, letters[0], NOW) is None
    assert reassembler.add(SENDER, letters[0], NOW) is None
    assert reassembler.add(SENDER, letters[1], NOW) is None
    assert reassembler.add(SENDER, letters[1], NOW) is None
    done = reassembler.add(SENDER, letters[2], NOW)
    assert done is not None and done.text == "z" * (CHUNK_BYTES * 3)
    assert len(reassembler) == 0


def test_texts_from_different_senders_with_the_same_id_stay_apart() -> None:
    mine = letters_of("m" * (CHUNK_BYTES * 2))
    theirs = letters_of("o" * (CHUNK_BYTES * 2))
    reassembler = Reassembler()
    assert reassembler.add(b"a" * 32, mine[0], NOW) is None
    assert reassembler.add(b"b" * 32, theirs[1], NOW) is None
    done = reassembler.add(b"a" * 32, mine[1], NOW)
    assert done is not None and done.text == "m" * (CHUNK_BYTES * 2)


def test_changed_part_count_is_an_error() -> None:
    reassembler = Reassembler()
    reassembler.add(SENDER, decode_letter(encode_letter(b"t" * 16, 0, 3, 0, b"a")), NOW)
    with pytest.raises(LetterError):
        reassembler.add(SENDER, decode_letter(encode_letter(b"t" * 16, 1, 4, 0, b"b")), NOW)


def test_invalid_utf8_text_is_an_error() -> None:
    reassembler = Reassembler()
    with pytest.raises(LetterError):
        reassembler.add(SENDER, decode_letter(encode_letter(b"t" * 16, 0, 1, 0, b"\xff")), NOW)


def half_finished(text_id: bytes) -> pb.Letter:
    return decode_letter(encode_letter(text_id, 0, 2, 0, b"x" * CHUNK_BYTES))


def test_per_sender_cap_evicts_that_senders_oldest_only() -> None:
    reassembler = Reassembler()
    victim_first = letters_of("v" * (CHUNK_BYTES * 2), text_id=b"V" * 16)
    assert reassembler.add(b"victim".ljust(32), victim_first[0], NOW) is None
    for i in range(REASSEMBLY_MAX_TEXTS_PER_SENDER * 10):
        reassembler.add(b"flood".ljust(32), half_finished(i.to_bytes(16, "big")), NOW)
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS_PER_SENDER + 1
    done = reassembler.add(b"victim".ljust(32), victim_first[1], NOW)
    assert done is not None and done.text == "v" * (CHUNK_BYTES * 2)


def test_total_cap_bounds_a_flood_from_many_senders() -> None:
    reassembler = Reassembler()
    for i in range(REASSEMBLY_MAX_TEXTS * 4):
        sender = i.to_bytes(32, "big")
        reassembler.add(sender, half_finished(b"t" * 16), NOW + i * 0.001)
        assert len(reassembler) <= REASSEMBLY_MAX_TEXTS
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS


def test_half_finished_texts_time_out() -> None:
    reassembler = Reassembler()
    letters = letters_of("q" * (CHUNK_BYTES * 2))
    reassembler.add(SENDER, letters[0], NOW)
    reassembler.expire(NOW + REASSEMBLY_TIMEOUT_S - 1)
    assert len(reassembler) == 1
    reassembler.expire(NOW + REASSEMBLY_TIMEOUT_S)
    assert len(reassembler) == 0
    # The late second part starts a fresh, still incomplete text.
    assert reassembler.add(SENDER, letters[1], NOW + REASSEMBLY_TIMEOUT_S + 1) is None


def test_adding_expires_stale_partials() -> None:
    reassembler = Reassembler()
    reassembler.add(SENDER, half_finished(b"1" * 16), NOW)
    reassembler.add(SENDER, half_finished(b"2" * 16), NOW + REASSEMBLY_TIMEOUT_S + 1)
    assert len(reassembler) == 1


def _padded(letter: pb.Letter) -> bytes:
    body = letter.SerializeToString()
    return len(body).to_bytes(2, "big") + body + bytes(LETTER_BYTES - 2 - len(body))


def test_a_text_whose_part_count_changes_is_refused_as_a_bad_letter() -> None:
    """A peer's parts of one text must agree on the number of parts; one that does not
    is refused and counted as ``bad_letter`` (docs/PROTOCOL.md, "7.1 Letters"), through
    the node: the reason is what the status panel and the attack benchmarks count."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    text_id = b"t" * 16
    for part, parts in ((0, 2), (1, 3)):
        letter = pb.Letter(text_id=text_id, part=part, parts=parts, sent_ms=1, chunk=b"x")
        a._send_letters(b.identity.public, text_id, [_padded(letter)], T0, handshake=False)
        wire.pump(T0)
    assert b.stats.rejected["bad_letter"] == 1
    assert wire.texts(b) == []


# ---------------------------------------------------------------- third mutation round
# Rules bench/MUTATION.md ("Third round (A)") found no test for.


def test_the_length_prefix_must_fit_the_letter_even_when_the_bytes_after_it_parse() -> None:
    """docs/PROTOCOL.md, "7.1": a letter is a 2-byte length, the protobuf and zeros up to
    LETTER_BYTES, so the length is at most LETTER_BYTES - 2. A body that fills the letter
    (here an unknown field pads it) must not be accepted under a longer length too."""
    body = pb.Letter(text_id=b"t" * 16, part=0, parts=1, chunk=b"hi").SerializeToString()
    filler = LETTER_BYTES - 2 - len(body) - 3  # tag (1) and length (2) of the unknown field
    body += bytes([15 << 3 | 2]) + bytes([filler & 0x7F | 0x80, filler >> 7]) + b"u" * filler
    assert len(body) == LETTER_BYTES - 2
    assert decode_letter(len(body).to_bytes(2, "big") + body).chunk == b"hi"
    for size in (LETTER_BYTES - 1, LETTER_BYTES):
        with pytest.raises(LetterError):
            decode_letter(size.to_bytes(2, "big") + body)


def test_a_read_letter_carries_the_time_it_was_written() -> None:
    """Sessions tell a reset from a replay by a letter's sent_ms (docs/PROTOCOL.md, "7.1"):
    a read receipt carries it like any letter."""
    ids = [bytes([i]) * TEXT_ID_BYTES for i in range(3)]
    letter = decode_letter(encode_read_letter(b"r" * TEXT_ID_BYTES, 1_800_000_000_123, ids))
    assert letter.sent_ms == 1_800_000_000_123 and list(letter.read.text_ids) == ids


def test_past_the_bound_the_network_holding_the_most_gives_up_a_slot() -> None:
    """docs/PROTOCOL.md, "9. Reassembly": counted with the newcomer, the network holding
    the most slots gives one up, its least recently progressed text first; a newcomer's
    own network too, when it ties. Two networks of 128 texts each fill the table."""
    reassembler = Reassembler()
    texts: dict[str, list[tuple[bytes, bytes]]] = {"A": [], "B": []}
    per_net = REASSEMBLY_MAX_TEXTS // 2
    for net in ("A", "B"):
        for i in range(per_net):
            sender = f"{net}{i // REASSEMBLY_MAX_TEXTS_PER_SENDER}".encode().ljust(32)
            text_id = f"{net}{i}".encode().ljust(TEXT_ID_BYTES)
            texts[net].append((sender, text_id))
            assert reassembler.add(sender, two_part(text_id, 0), NOW, origin=net) is None
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS

    def finish(net: str, index: int) -> Completed | None:
        sender, text_id = texts[net][index]
        return reassembler.add(sender, two_part(text_id, 1), NOW, origin=net)

    # A newcomer from B ties B with A plus one: B gives up its oldest, A keeps all.
    texts["B"].append((b"B-new".ljust(32), b"B-new".ljust(TEXT_ID_BYTES)))
    texts["C"] = [(b"C".ljust(32), b"C".ljust(TEXT_ID_BYTES))]
    sender, text_id = texts["B"][-1]
    assert reassembler.add(sender, two_part(text_id, 0), NOW, origin="B") is None
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS
    assert finish("A", 0) is not None  # A's oldest was kept
    assert finish("B", 0) is None  # B's oldest was given up: this starts it anew
    # A newcomer from a third network: B (129 with its restarted text) gives one up.
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS
    sender, text_id = texts["C"][0]
    assert reassembler.add(sender, two_part(text_id, 0), NOW, origin="C") is None
    assert len(reassembler) == REASSEMBLY_MAX_TEXTS
    assert finish("A", 1) is not None
    assert finish("C", 0) is not None
    assert finish("B", 1) is None  # B's least recently progressed went


def two_part(text_id: bytes, part: int) -> pb.Letter:
    return decode_letter(encode_letter(text_id, part, 2, 0, b"y" * CHUNK_BYTES))
