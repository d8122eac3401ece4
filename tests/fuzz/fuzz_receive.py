"""Coverage-guided fuzzing of a node's whole receive path with atheris (optional).

Not part of the test suite (it runs until stopped). Seeds are real datagrams of
every frame kind, from the same rig as ``tests/test_fuzz_receive.py``. The first
input byte picks how the rest is delivered:

- even: as a raw datagram (decoder, authenticator, replay window);
- odd: as the plaintext of a correctly boxed frame from a known peer, with a
  fresh nonce each time, so mutations reach the frame handlers, the message
  opener, the reassembler and the ack verifier.

Any exception out of ``Node.receive_datagram`` is a crash. Run from the repo root
(without a corpus directory it starts from the seeds in a temporary one):

    pip install atheris
    python -m tests.fuzz.fuzz_receive -max_total_time=60
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from comm_tui.protocol import wire_pb2 as pb
    from comm_tui.protocol.codec import PROTOCOL_VERSION
    from tests.test_fuzz_receive import A_ENDPOINT, T0, rig

RIG = rig()
NONCES = itertools.count(1)


def _boxed(plaintext: bytes) -> bytes:
    nonce = int(T0 * 1000).to_bytes(8, "big") + next(NONCES).to_bytes(16, "big")
    box = RIG.a.codec.box(RIG.b.identity.key)
    packet = pb.Packet(
        version=PROTOCOL_VERSION,
        sender_key=RIG.a.identity.key,
        boxed=bytes(box.encrypt(plaintext, nonce)),
    )
    return packet.SerializeToString()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    payload = data[1:]
    datagram = _boxed(payload) if data[0] & 1 else payload
    RIG.b.receive_datagram(datagram, A_ENDPOINT, T0)
    RIG.b.datagrams_to_send()
    while RIG.b.next_event() is not None:
        pass


def seed_corpus() -> Path:
    """Raw datagrams (even first byte) and frame plaintexts (odd first byte) in a new dir."""
    corpus = Path(tempfile.mkdtemp(prefix="comm-tui-fuzz-"))
    seeds = [b"\x00" + d for d in RIG.datagrams.values()]
    seeds += [b"\x01" + f for f in RIG.frames.values()]
    for number, seed in enumerate(seeds):
        (corpus / f"seed{number}").write_bytes(seed)
    return corpus


if __name__ == "__main__":
    if not any(not arg.startswith("-") for arg in sys.argv[1:]):
        sys.argv.append(str(seed_corpus()))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
