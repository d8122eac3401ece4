"""Types of what the node lends its collaborators (``directory.py``,
``reachability_agent.py``): callables too rich for a plain ``Callable`` type."""

from __future__ import annotations

from typing import Protocol

from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.routing import Endpoint


class SendFrame(Protocol):
    """The node's ``_send_frame``: box and queue a frame for ``key`` at ``endpoint``;
    False if it was held back (the anti-amplification limit, an unsendable frame).

    ``probe`` marks requests we start on our own, which our query table bounds instead
    of the 3x limit to unvalidated endpoints (docs/PROTOCOL.md, "Admission").
    """

    def __call__(
        self, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float, *, probe: bool = False
    ) -> bool: ...
