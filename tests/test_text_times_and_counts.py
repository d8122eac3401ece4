"""A text carries the time it was written, and every delivery is counted (docs/PROTOCOL.md,
"7.1 Letters").

The recipient shows a text at its ``sent_ms`` (the sender's clock when it was written, or
the time a re-send keeps from the first attempt), and ``stats.texts_delivered`` feeds the
status panel and the benchmarks' delivery figures. The fast core tests delivered one text
at a time and never read ``sent_ms``, so a counter that did not add up and a text that
lost its time both survived mutation testing (bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol.events import TextReceived
from tests.wire import T0, Wire


def test_texts_carry_their_time_and_each_delivery_is_counted() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    first = a.send_text(b.identity.public, "now", T0 + 1.5)
    second = a.send_text(b.identity.public, "kept", T0 + 2, sent_ms=1_700_000_000_123)
    wire.run(T0 + 2, T0 + 10)
    received = {
        e.text_id: e.sent_ms for e in wire.of(b, TextReceived) if isinstance(e, TextReceived)
    }
    assert received == {first: int((T0 + 1.5) * 1000), second: 1_700_000_000_123}
    assert a.stats.texts_delivered == 2
