from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Packet(_message.Message):
    __slots__ = ("version", "sender_key", "hello", "boxed", "cookie_reply", "cookie")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_KEY_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BOXED_FIELD_NUMBER: _ClassVar[int]
    COOKIE_REPLY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    version: int
    sender_key: bytes
    hello: Hello
    boxed: bytes
    cookie_reply: CookieReply
    cookie: bytes
    def __init__(self, version: _Optional[int] = ..., sender_key: _Optional[bytes] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., boxed: _Optional[bytes] = ..., cookie_reply: _Optional[_Union[CookieReply, _Mapping]] = ..., cookie: _Optional[bytes] = ...) -> None: ...

class CookieReply(_message.Message):
    __slots__ = ("cookie", "echo")
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    cookie: bytes
    echo: bytes
    def __init__(self, cookie: _Optional[bytes] = ..., echo: _Optional[bytes] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("challenge", "padding")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    padding: bytes
    def __init__(self, challenge: _Optional[bytes] = ..., padding: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("ping", "pong", "find_node", "nodes", "message", "ack", "receipt", "fetch", "record", "get_record", "attach", "probe_request", "dial_back", "probe", "introduce", "introduced", "client")
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    FIND_NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    GET_RECORD_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    PROBE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DIAL_BACK_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    INTRODUCE_FIELD_NUMBER: _ClassVar[int]
    INTRODUCED_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ping: Ping
    pong: Pong
    find_node: FindNode
    nodes: Nodes
    message: Message
    ack: Ack
    receipt: Receipt
    fetch: Fetch
    record: Record
    get_record: GetRecord
    attach: Attach
    probe_request: ProbeRequest
    dial_back: DialBack
    probe: Probe
    introduce: Introduce
    introduced: Introduced
    client: bool
    def __init__(self, ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., find_node: _Optional[_Union[FindNode, _Mapping]] = ..., nodes: _Optional[_Union[Nodes, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., fetch: _Optional[_Union[Fetch, _Mapping]] = ..., record: _Optional[_Union[Record, _Mapping]] = ..., get_record: _Optional[_Union[GetRecord, _Mapping]] = ..., attach: _Optional[_Union[Attach, _Mapping]] = ..., probe_request: _Optional[_Union[ProbeRequest, _Mapping]] = ..., dial_back: _Optional[_Union[DialBack, _Mapping]] = ..., probe: _Optional[_Union[Probe, _Mapping]] = ..., introduce: _Optional[_Union[Introduce, _Mapping]] = ..., introduced: _Optional[_Union[Introduced, _Mapping]] = ..., client: _Optional[bool] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("challenge",)
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    def __init__(self, challenge: _Optional[bytes] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("challenge", "observed")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    observed: SeenEndpoint
    def __init__(self, challenge: _Optional[bytes] = ..., observed: _Optional[_Union[SeenEndpoint, _Mapping]] = ...) -> None: ...

class SeenEndpoint(_message.Message):
    __slots__ = ("ip", "port")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ip: bytes
    port: int
    def __init__(self, ip: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class Attach(_message.Message):
    __slots__ = ("challenge", "interval_s", "echo_after_s")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ECHO_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    interval_s: int
    echo_after_s: int
    def __init__(self, challenge: _Optional[bytes] = ..., interval_s: _Optional[int] = ..., echo_after_s: _Optional[int] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("nonce", "port")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    port: int
    def __init__(self, nonce: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class DialBack(_message.Message):
    __slots__ = ("key", "target", "nonce")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    target: SeenEndpoint
    nonce: bytes
    def __init__(self, key: _Optional[bytes] = ..., target: _Optional[_Union[SeenEndpoint, _Mapping]] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class Probe(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class FindNode(_message.Message):
    __slots__ = ("query_id", "target", "padding")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    query_id: bytes
    target: bytes
    padding: bytes
    def __init__(self, query_id: _Optional[bytes] = ..., target: _Optional[bytes] = ..., padding: _Optional[bytes] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("key", "ip", "port")
    KEY_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    ip: bytes
    port: int
    def __init__(self, key: _Optional[bytes] = ..., ip: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class Nodes(_message.Message):
    __slots__ = ("query_id", "nodes")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    query_id: bytes
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, query_id: _Optional[bytes] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("recipient", "expires_ms", "sealed", "stem")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    STEM_FIELD_NUMBER: _ClassVar[int]
    recipient: bytes
    expires_ms: int
    sealed: bytes
    stem: bool
    def __init__(self, recipient: _Optional[bytes] = ..., expires_ms: _Optional[int] = ..., sealed: _Optional[bytes] = ..., stem: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("message_id", "recipient_key", "expires_ms", "signature")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    message_id: bytes
    recipient_key: bytes
    expires_ms: int
    signature: bytes
    def __init__(self, message_id: _Optional[bytes] = ..., recipient_key: _Optional[bytes] = ..., expires_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Fetch(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrekeyBundle(_message.Message):
    __slots__ = ("owner_key", "signed_prekey_id", "signed_prekey", "one_time_prekeys", "issued_ms", "expires_ms", "signature")
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_PREKEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNED_PREKEY_FIELD_NUMBER: _ClassVar[int]
    ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    owner_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    one_time_prekeys: _containers.RepeatedCompositeFieldContainer[OneTimePrekey]
    issued_ms: int
    expires_ms: int
    signature: bytes
    def __init__(self, owner_key: _Optional[bytes] = ..., signed_prekey_id: _Optional[int] = ..., signed_prekey: _Optional[bytes] = ..., one_time_prekeys: _Optional[_Iterable[_Union[OneTimePrekey, _Mapping]]] = ..., issued_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class OneTimePrekey(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    key: bytes
    def __init__(self, id: _Optional[int] = ..., key: _Optional[bytes] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("query_id", "bundle")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    query_id: bytes
    bundle: PrekeyBundle
    def __init__(self, query_id: _Optional[bytes] = ..., bundle: _Optional[_Union[PrekeyBundle, _Mapping]] = ...) -> None: ...

class GetRecord(_message.Message):
    __slots__ = ("query_id", "address")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    query_id: bytes
    address: bytes
    def __init__(self, query_id: _Optional[bytes] = ..., address: _Optional[bytes] = ...) -> None: ...

class Introduce(_message.Message):
    __slots__ = ("target", "nonce", "padding")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    target: bytes
    nonce: bytes
    padding: bytes
    def __init__(self, target: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., padding: _Optional[bytes] = ...) -> None: ...

class Introduced(_message.Message):
    __slots__ = ("key", "nonce", "ip", "port")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    nonce: bytes
    ip: bytes
    port: int
    def __init__(self, key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ip: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class Letter(_message.Message):
    __slots__ = ("text_id", "part", "parts", "sent_ms", "chunk", "profile", "read")
    TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    SENT_MS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    text_id: bytes
    part: int
    parts: int
    sent_ms: int
    chunk: bytes
    profile: Profile
    read: ReadReceipt
    def __init__(self, text_id: _Optional[bytes] = ..., part: _Optional[int] = ..., parts: _Optional[int] = ..., sent_ms: _Optional[int] = ..., chunk: _Optional[bytes] = ..., profile: _Optional[_Union[Profile, _Mapping]] = ..., read: _Optional[_Union[ReadReceipt, _Mapping]] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ReadReceipt(_message.Message):
    __slots__ = ("text_ids",)
    TEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    text_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, text_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class StoreEntry(_message.Message):
    __slots__ = ("message", "ack", "record", "attempts", "next_at", "holders", "settled", "own_text_id", "own_part", "own_parts", "stored_at", "origin", "origin_net", "origin_key", "origin_host", "origin_port", "notify", "stem", "first_held_at")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AT_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    OWN_TEXT_ID_FIELD_NUMBER: _ClassVar[int]
    OWN_PART_FIELD_NUMBER: _ClassVar[int]
    OWN_PARTS_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_NET_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_KEY_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_HOST_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_PORT_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    STEM_FIELD_NUMBER: _ClassVar[int]
    FIRST_HELD_AT_FIELD_NUMBER: _ClassVar[int]
    message: Message
    ack: Ack
    record: PrekeyBundle
    attempts: int
    next_at: float
    holders: _containers.RepeatedScalarFieldContainer[bytes]
    settled: bool
    own_text_id: bytes
    own_part: int
    own_parts: int
    stored_at: float
    origin: bytes
    origin_net: str
    origin_key: bytes
    origin_host: str
    origin_port: int
    notify: _containers.RepeatedScalarFieldContainer[bytes]
    stem: bool
    first_held_at: float
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., record: _Optional[_Union[PrekeyBundle, _Mapping]] = ..., attempts: _Optional[int] = ..., next_at: _Optional[float] = ..., holders: _Optional[_Iterable[bytes]] = ..., settled: _Optional[bool] = ..., own_text_id: _Optional[bytes] = ..., own_part: _Optional[int] = ..., own_parts: _Optional[int] = ..., stored_at: _Optional[float] = ..., origin: _Optional[bytes] = ..., origin_net: _Optional[str] = ..., origin_key: _Optional[bytes] = ..., origin_host: _Optional[str] = ..., origin_port: _Optional[int] = ..., notify: _Optional[_Iterable[bytes]] = ..., stem: _Optional[bool] = ..., first_held_at: _Optional[float] = ...) -> None: ...
