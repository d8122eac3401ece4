"""Messages that widgets and the node worker post upward to the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from comm_tui.net.service import ServiceEvent


@dataclass
class NodeEvent(Message):
    """Something the node service reported (a text in, an outgoing state, peers)."""

    event: ServiceEvent


@dataclass
class NodeStarted(Message):
    """The node is bound and running."""

    listen: str


@dataclass
class ConversationOpened(Message):
    """The user chose a conversation in the contact list."""

    peer_address: bytes
    focus_input: bool = True


@dataclass
class SendRequested(Message):
    """The user pressed Enter on a non-empty message in the conversation input."""

    peer_address: bytes
    text: str


@dataclass
class RequestAnswered(Message):
    """The user accepted or ignored a message request from an unknown sender."""

    peer_address: bytes
    accept: bool
