"""Texts as letters: splitting, fixed-size padding and reassembly.

A text is cut into parts that each travel as their own sealed message with its
own id and ack, so relays only ever handle small, uniform items and never have to
reassemble anything. Every letter is padded to exactly LETTER_BYTES, so every
message a relay sees has the same size whatever it says.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.emoji_variation import EMOJI_VARIATION_BASES

MAX_TEXT_BYTES = 64 * 1024
# Chosen so that a boxed, sealed, padded letter fits one 1,200-byte datagram, cookie included
# (tests/test_letters.py checks the worst case).
LETTER_BYTES = 817
CHUNK_BYTES = 769
MAX_PARTS = -(-MAX_TEXT_BYTES // CHUNK_BYTES)
TEXT_ID_BYTES = 16
# Half-received texts are forgotten after this long, and bounded in number.
REASSEMBLY_TIMEOUT_S = 3600.0
REASSEMBLY_MAX_TEXTS = 256
REASSEMBLY_MAX_TEXTS_PER_SENDER = 16
# docs/PROTOCOL.md, "7.1.1 Display names and read receipts".
DISPLAY_NAME_MAX_BYTES = 64
# A receipt names at most this many texts: 32 ids of 16 bytes fit one letter (checked
# by tests/test_letters.py with the largest field values).
READ_IDS_MAX = 32
# Unicode categories a display name may not contain: controls, format characters (bidi
# embeddings, overrides, isolates, zero-width joiners), surrogates, private use,
# unassigned, line and paragraph separators. A name is shown on one line as the
# peer's literal words; none of these has a place in it.
_FORBIDDEN_DISPLAY_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Code points of other categories that render as nothing (docs/PROTOCOL.md, "7.1.1"):
# a name holding one could look blank, or like another name with it left out. Hangul
# fillers, the braille blank, the combining grapheme joiner, Khmer inherent vowels,
# Mongolian free variation selectors, the Khitan filler, the musical null notehead.
BLANK_CODE_POINTS = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800}
    | {0x3164, 0xFFA0, 0x16FE4, 0x1D159}
)
# Nonspacing and enclosing marks (categories Mn, Me) stack on the character before them:
# at most this many in a row, after a character that is neither a space nor a mark.
COMBINING_MARKS_MAX = 4
_MARK_CATEGORIES = frozenset({"Mn", "Me"})
# Variation selectors (category Mn): VS1-VS16 and VS17-VS256. After a character that
# has no variation sequence with them they select nothing and show nothing, an invisible
# trailer that makes two names look the same (docs/PROTOCOL.md, "7.1.1"). A name may
# hold only VS15 (text style) or VS16 (emoji style) right after an emoji base
# (``EMOJI_VARIATION_BASES``), or VS16 between a keycap base and U+20E3 ("1️⃣").
VARIATION_SELECTORS = frozenset(range(0xFE00, 0xFE10)) | frozenset(range(0xE0100, 0xE01F0))
EMOJI_STYLE_SELECTORS = frozenset({0xFE0E, 0xFE0F})
KEYCAP_BASES = frozenset("0123456789#*")
COMBINING_ENCLOSING_KEYCAP = "\u20e3"


class LetterError(ValueError):
    """A letter that opened correctly but does not make sense."""


class ControlError(LetterError):
    """A control letter (display name, read receipt) with a field out of its bounds."""


def display_name(raw: str) -> str | None:
    """``raw`` as a display name (whitespace runs made one space, NFC), or None if it
    cannot be one: empty, over DISPLAY_NAME_MAX_BYTES of UTF-8, or holding a character
    of a forbidden category (docs/PROTOCOL.md, "7.1.1")."""
    name = unicodedata.normalize("NFC", " ".join(raw.split()))
    return name if is_display_name(name) else None


def is_display_name(name: str) -> bool:
    """Whether ``name`` is a display name exactly as it must travel: already normalized
    (so one name has one encoding), 1 to 64 bytes, no forbidden or blank character,
    marks only on a visible base, at most COMBINING_MARKS_MAX of them ("Zalgo"), and
    variation selectors only where they select something (``_selects``).

    The one rule for letters, cards and the user's own name (docs/PROTOCOL.md, "7.1.1"):
    a name is shown as the peer's literal words, so it must look like something, and like
    nothing taller than one line.
    """
    if not (
        0 < len(name.encode("utf-8", "surrogatepass")) <= DISPLAY_NAME_MAX_BYTES
        and name == unicodedata.normalize("NFC", " ".join(name.split()))
    ):
        return False
    # With the rules above, the first character is visible: a name never looks blank.
    marks = 0
    previous = " "  # a mark may not open the name
    for i, c in enumerate(name):
        category = unicodedata.category(c)
        if category in _FORBIDDEN_DISPLAY_CATEGORIES or ord(c) in BLANK_CODE_POINTS:
            return False
        if ord(c) in VARIATION_SELECTORS and not _selects(name, i):
            return False
        if category in _MARK_CATEGORIES:
            marks += 1
            if previous == " " or marks > COMBINING_MARKS_MAX:
                return False
            continue
        marks = 0
        previous = c
    return True


def _selects(name: str, i: int) -> bool:
    """Does the variation selector ``name[i]`` select something? Only VS15 or VS16 right
    after an emoji base ("❤️"), or VS16 between a keycap base and U+20E3 ("1️⃣")
    (docs/PROTOCOL.md, "7.1.1"). None opens a name: there it follows nothing."""
    if ord(name[i]) not in EMOJI_STYLE_SELECTORS or i == 0:
        return False
    before = name[i - 1]
    if ord(before) in EMOJI_VARIATION_BASES:
        return True
    return (
        name[i] == "\ufe0f"
        and before in KEYCAP_BASES
        and name[i + 1 : i + 2] == COMBINING_ENCLOSING_KEYCAP
    )


def split_text(text: str) -> list[bytes]:
    data = text.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"text is {len(data)} bytes; the limit is {MAX_TEXT_BYTES}")
    if not data:
        return [b""]
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def encode_letter(text_id: bytes, part: int, parts: int, sent_ms: int, chunk: bytes) -> bytes:
    """A letter as a 2-byte length, its protobuf, and zeros up to exactly LETTER_BYTES."""
    letter = pb.Letter(text_id=text_id, part=part, parts=parts, sent_ms=sent_ms, chunk=chunk)
    return _padded(letter)


def encode_profile_letter(text_id: bytes, sent_ms: int, name: str, version: int) -> bytes:
    """A one-part control letter claiming ``name`` (docs/PROTOCOL.md, "7.1.1")."""
    if not is_display_name(name) or version < 1:
        raise ValueError("not a display name")
    profile = pb.Profile(name=name, version=version)
    return _padded(pb.Letter(text_id=text_id, part=0, parts=1, sent_ms=sent_ms, profile=profile))


def encode_read_letter(text_id: bytes, sent_ms: int, read_ids: list[bytes]) -> bytes:
    """A one-part control letter naming texts the author read (docs/PROTOCOL.md, "7.1.1")."""
    receipt = pb.ReadReceipt(text_ids=read_ids)
    letter = pb.Letter(text_id=text_id, part=0, parts=1, sent_ms=sent_ms, read=receipt)
    _check_control(letter)
    return _padded(letter)


def _padded(letter: pb.Letter) -> bytes:
    body = letter.SerializeToString()
    if len(body) + 2 > LETTER_BYTES:
        raise ValueError("letter chunk too large")
    return len(body).to_bytes(2, "big") + body + bytes(LETTER_BYTES - 2 - len(body))


def decode_letter(data: bytes) -> pb.Letter:
    if len(data) != LETTER_BYTES:
        raise LetterError("letter has the wrong size")
    size = int.from_bytes(data[:2], "big")
    if size > LETTER_BYTES - 2 or any(data[2 + size :]):
        raise LetterError("letter padding is malformed")
    try:
        letter = pb.Letter.FromString(data[2 : 2 + size])
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise LetterError("malformed letter") from exc
    if (
        len(letter.text_id) != TEXT_ID_BYTES
        or not 1 <= letter.parts <= MAX_PARTS
        or letter.part >= letter.parts
        or len(letter.chunk) > CHUNK_BYTES
    ):
        raise LetterError("letter fields out of range")
    if letter.WhichOneof("control") is not None:
        _check_control(letter)
    return letter


def _check_control(letter: pb.Letter) -> None:
    """A control letter is one part with no text, and its field within bounds."""
    if letter.parts != 1 or letter.chunk:
        raise ControlError("a control letter carries text")
    if letter.HasField("profile"):
        if not is_display_name(letter.profile.name) or letter.profile.version < 1:
            raise ControlError("display name out of bounds")
    else:
        ids = list(letter.read.text_ids)
        if (
            not 1 <= len(ids) <= READ_IDS_MAX
            or len(set(ids)) != len(ids)
            or any(len(i) != TEXT_ID_BYTES for i in ids)
        ):
            raise ControlError("read receipt out of bounds")


@dataclass
class _Partial:
    parts: int
    sent_ms: int
    progressed: float  # when its last new part arrived
    origin: str  # network of the peer that handed us its first part
    chunks: dict[int, bytes] = field(default_factory=dict)
    tags: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Completed:
    text_id: bytes
    text: str
    sent_ms: int
    tags: tuple[object, ...]  # what the caller attached to each part, in part order


class Reassembler:
    """Collects the parts of texts, bounded in count and age.

    Keyed by (sender key, text id) so one sender cannot complete or corrupt
    another's text. Each sender has its own cap, but keys are free, so past the
    global bound the slots are shared fairly by the *network* that handed us each
    text's first part (``routing.origin_network``): the network holding the most
    slots gives one up, its least recently progressed text first. A flood of
    half-finished texts from one host, or one /24, then only ever evicts its own.
    A stalled text also expires REASSEMBLY_TIMEOUT_S after its last progress.
    """

    def __init__(self) -> None:
        self._partials: OrderedDict[tuple[bytes, bytes], _Partial] = OrderedDict()

    def __len__(self) -> int:
        return len(self._partials)

    def add(
        self,
        sender_key: bytes,
        letter: pb.Letter,
        now: float,
        tag: object = None,
        origin: str = "",
    ) -> Completed | None:
        """Add one part; ``tag`` (e.g. the part's message id) comes back on completion.

        ``origin`` names the network the part came from (for fair eviction).
        """
        self.expire(now)
        key = (sender_key, letter.text_id)
        partial = self._partials.get(key)
        if partial is None:
            if letter.parts == 1:
                return self._finish(letter.text_id, [letter.chunk], letter.sent_ms, (tag,))
            self._make_room(sender_key, origin)
            partial = self._partials[key] = _Partial(letter.parts, letter.sent_ms, now, origin)
        elif partial.parts != letter.parts:
            raise LetterError("part count changed within one text")
        if letter.part not in partial.chunks:
            partial.progressed = now
            self._partials.move_to_end(key)
        partial.chunks[letter.part] = letter.chunk
        partial.tags[letter.part] = tag
        if len(partial.chunks) < partial.parts:
            return None
        del self._partials[key]
        order = range(partial.parts)
        return self._finish(
            letter.text_id,
            [partial.chunks[i] for i in order],
            partial.sent_ms,
            tuple(partial.tags[i] for i in order),
        )

    def expire(self, now: float) -> None:
        while self._partials:
            key, oldest = next(iter(self._partials.items()))
            if now - oldest.progressed < REASSEMBLY_TIMEOUT_S:
                break
            del self._partials[key]

    def _make_room(self, sender_key: bytes, origin: str) -> None:
        own = [k for k in self._partials if k[0] == sender_key]
        if len(own) >= REASSEMBLY_MAX_TEXTS_PER_SENDER:
            del self._partials[own[0]]
        while len(self._partials) >= REASSEMBLY_MAX_TEXTS:
            # Counted as if the newcomer were in, so a crowded network evicts its own.
            held = Counter(p.origin for p in self._partials.values())
            held[origin] += 1
            crowded = max(held.values())
            # Least recently progressed first: the dict is in progress order.
            victim = next(k for k, p in self._partials.items() if held[p.origin] == crowded)
            del self._partials[victim]

    @staticmethod
    def _finish(
        text_id: bytes, chunks: list[bytes], sent_ms: int, tags: tuple[object, ...]
    ) -> Completed:
        data = b"".join(chunks)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LetterError("text is not UTF-8") from exc
        return Completed(text_id, text, sent_ms, tags)
