"""The table of emoji variation bases (docs/PROTOCOL.md, "7.1.1"), pinned as data.

mutmut mutates function bodies only, so the table in ``protocol/emoji_variation.py`` has
no mutants: these tests are what notices a range edited by one code point (the count the
spec states changes, or two ranges come to overlap) or a base that is no emoji base.
"""

from __future__ import annotations

import itertools
import unicodedata

from comm_tui.protocol.emoji_variation import _EMOJI_VARIATION_RANGES, EMOJI_VARIATION_BASES
from comm_tui.protocol.letters import KEYCAP_BASES, VARIATION_SELECTORS, is_display_name

# docs/PROTOCOL.md, "7.1.1": "the 359 code points of protocol/emoji_variation.py".
BASES_IN_THE_SPEC = 359


def test_the_table_holds_the_359_bases_the_spec_names_in_disjoint_ranges_in_order() -> None:
    assert len(EMOJI_VARIATION_BASES) == BASES_IN_THE_SPEC
    # Each range in order, after the one before it with a gap: a range that grew into its
    # neighbour would hide from the count, a merged pair would have been written as one.
    for first, last in _EMOJI_VARIATION_RANGES:
        assert first <= last
    for (_, last), (first, _) in itertools.pairwise(_EMOJI_VARIATION_RANGES):
        assert first > last + 1
    total = sum(last - first + 1 for first, last in _EMOJI_VARIATION_RANGES)
    assert total == BASES_IN_THE_SPEC


def test_every_base_is_an_assigned_character_that_is_no_keycap_base_mark_or_selector() -> None:
    """The bases were all assigned in Unicode 14.0 (the reference implementation's
    ``unicodedata``); the keycap bases take U+FE0F only inside a keycap, a rule of its
    own; a mark or a selector as a base would let selectors stack."""
    assert unicodedata.unidata_version >= "14.0.0"
    keycaps = {ord(c) for c in KEYCAP_BASES}
    for code in EMOJI_VARIATION_BASES:
        category = unicodedata.category(chr(code))
        assert category not in ("Cn", "Mn", "Me", "Mc"), hex(code)
        assert code not in keycaps and code not in VARIATION_SELECTORS, hex(code)


def test_both_selectors_stand_after_every_base_of_the_table_and_after_none_beside_it() -> None:
    """VS15 and VS16 select a style after each of the 359 bases; after the code point
    just before or just after a range (no base) they select nothing and are refused."""
    for code in EMOJI_VARIATION_BASES:
        for selector in ("\ufe0e", "\ufe0f"):
            assert is_display_name(chr(code) + selector), hex(code)
    for first, last in _EMOJI_VARIATION_RANGES:
        for code in (first - 1, last + 1):
            if code in EMOJI_VARIATION_BASES or unicodedata.category(chr(code)) == "Cn":
                continue
            assert not is_display_name(chr(code) + "\ufe0f"), hex(code)
