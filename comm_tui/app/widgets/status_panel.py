"""The network-status panel: who we are, how the node is doing, and traffic over time."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Sparkline, Static

from comm_tui.app.format import ago, short_address, shown, size
from comm_tui.app.status import StatusSnapshot
from comm_tui.app.widgets.qr import QRCode
from comm_tui.protocol.relay_store import RelayUsage

TRAFFIC_HISTORY_SAMPLES = 60
NO_PEERS_HINT = (
    "Alone for now: texts wait in the outbox. Start comm-tui with --bootstrap HOST:PORT"
    " of any node, or run another comm-tui on this machine (found by itself)."
)
STATE_STYLES = {"online": "bold $text-success", "no peers": "bold $text-error"}
# docs/PROTOCOL.md, "12.3 Classification and client mode": what each kind means to a user.
REACHABILITY_TEXT = {
    "public": "yes: others can reach us",
    "cone": "behind a NAT that keeps mappings",
    "symmetric": "behind a symmetric NAT",
    "firewalled": "no: a firewall drops strangers",
    "unknown": "checking…",
}


def reachability_rows(snapshot: StatusSnapshot) -> list[tuple[str, str]]:
    """How others reach us: kind, address as seen, mode, port mapping, direct contacts."""
    mode = (
        f"client: keep-alive every {snapshot.keepalive_s:.0f} s"
        if snapshot.client_mode and snapshot.keepalive_s is not None
        else "client"
        if snapshot.client_mode
        else "relay for others"
    )
    loopback = snapshot.listen.startswith(("127.", "[::1]"))
    reachable = REACHABILITY_TEXT.get(snapshot.reachability, snapshot.reachability)
    if loopback:  # probes from our own host prove nothing; nothing else can reach us
        reachable = "from this machine only (loopback)"
    rows = [
        ("reachable", reachable),
        ("seen as", snapshot.public_endpoint),
        ("mode", mode),
        ("port mapping", snapshot.port_mapping),
    ]
    if snapshot.punched:
        plural = "s" * (snapshot.punched != 1)
        rows.append(("direct", f"{snapshot.punched} contact{plural} through a punched hole"))
    return rows


def _rows(*pairs: tuple[str, str | Content]) -> Content:
    width = max(len(label) for label, _ in pairs)
    # The gap is part of the padded label: a bare "  " part would be dropped by assemble.
    lines = [
        Content.assemble((label.ljust(width + 2), "$text-muted"), value) for label, value in pairs
    ]
    return Content("\n").join(lines)


# Empty, then eighths of a full bucket.
BUCKET_MARKS = "·▁▂▃▄▅▆▇█"
ASCII_BUCKET_MARKS = ".12345678"


def bucket_bar(fill: tuple[tuple[int, int], ...], k: int = 8, marks: str = BUCKET_MARKS) -> str:
    """One character per bucket, farthest first, from empty (·) to full (█)."""
    return "".join(marks[0] if n == 0 else marks[min(8, max(1, round(8 * n / k)))] for _, n in fill)


# docs/PROTOCOL.md, "8.1 Local caps": a use bar's cells, filled then empty.
CAP_BAR_CELLS = 6
CAP_BAR_MARKS = ("█", "░")
ASCII_CAP_BAR_MARKS = ("#", ".")


def cap_bar(used: float, cap: float, marks: tuple[str, str] = CAP_BAR_MARKS) -> str:
    """``used`` against ``cap`` in CAP_BAR_CELLS cells; any use shows one cell at least."""
    cells = min(CAP_BAR_CELLS, round(CAP_BAR_CELLS * used / cap)) if cap > 0 else 0
    if used > 0:
        cells = max(1, cells)
    return marks[0] * cells + marks[1] * (CAP_BAR_CELLS - cells)


def used_of(used: float, cap: float, per: str = "") -> str:
    """``used/cap unit``, the unit once when both are in the same one (the panel is narrow)."""
    used_text, cap_text = size(used), size(cap)
    used_number, _, used_unit = used_text.partition(" ")
    cap_number, _, cap_unit = cap_text.partition(" ")
    if used_unit == cap_unit:
        return f"{used_number}/{cap_number} {cap_unit}{per}"
    return f"{used_text}{per} / {cap_text}{per}"


def relay_cap_rows(
    usage: RelayUsage, rate_bytes_s: float, *, ascii: bool = False
) -> list[tuple[str, str]]:
    """Use against each local cap, the networks of origin holding the most bytes, and
    what the caps refused (docs/PROTOCOL.md, "8.1 Local caps")."""
    marks = ASCII_CAP_BAR_MARKS if ascii else CAP_BAR_MARKS
    refused = dict(usage.refused)
    rows = [
        ("relaying", "on, for others" if usage.relaying else "off: own texts only"),
        (
            "stored",
            used_of(usage.bytes_held, usage.bytes_cap)
            + " "
            + cap_bar(usage.bytes_held, usage.bytes_cap, marks),
        ),
        (
            "items",
            f"{usage.items_held:,}/{usage.items_cap:,} "
            + cap_bar(usage.items_held, usage.items_cap, marks),
        ),
        (
            "bandwidth",
            used_of(rate_bytes_s, usage.bandwidth_cap, "/s")
            + " "
            + cap_bar(rate_bytes_s, usage.bandwidth_cap, marks),
        ),
        ("max life", f"{usage.days_cap:g} days"),
    ]
    for i, (net, held) in enumerate(usage.origins):
        share = 100 * held / max(1, usage.bytes_held)
        rows.append(("origins" if i == 0 else "", f"{net:<18} {share:3.0f}%"))
    counts = [f"{cap} {refused.get(cap, 0)}" for cap in ("bytes", "items", "days")]
    if refused.get("relay off"):
        counts.append(f"off {refused['relay off']}")
    rows.append(("refused", " · ".join(counts)))
    rows.append(("deferred", f"{usage.deferred} sends (bandwidth)"))
    if usage.waiting:  # only then: like the origins, a row for what there is
        rows.append(
            (
                "waiting",
                f"{usage.waiting:,} items · {usage.waiting_networks:,} networks"
                f" ({usage.waiting_wide:,} wide)",
            )
        )
        for net, items in usage.waiting_top:
            rows.append(("", f"{net:<18} {items:,}"))
    return rows


class StatusPanel(VerticalScroll):
    """Shows a :class:`StatusSnapshot`; set :attr:`snapshot` once a second."""

    snapshot: reactive[StatusSnapshot | None] = reactive(None, init=False, always_update=True)

    def __init__(self, *, ascii: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ascii = ascii
        self._previous: StatusSnapshot | None = None
        self._rates: deque[float] = deque([0.0] * TRAFFIC_HISTORY_SAMPLES, TRAFFIC_HISTORY_SAMPLES)
        self._relay_rate = 0.0  # bytes per second sent for others, between snapshots

    def compose(self) -> ComposeResult:
        yield Static("Identity", classes="section-title")
        yield Static(id="status-identity")
        yield Static("Node", classes="section-title")
        yield Static(id="status-node")
        yield Static("Relay", classes="section-title")
        yield Static(id="status-relay")
        yield Static("Traffic", classes="section-title")
        yield Static(id="status-traffic")
        if not self.ascii:  # its bars are block characters
            yield Sparkline(list(self._rates), id="status-sparkline")
        yield Static("Peers", classes="section-title")
        yield Static(id="status-peers")
        yield Static("My card (scan or ctrl+y to copy)", classes="section-title")
        yield QRCode(id="status-qr", ascii=self.ascii)

    def watch_snapshot(self, snapshot: StatusSnapshot | None) -> None:
        if snapshot is None or not self.query("#status-identity"):
            # The app's first tick can come before this panel's children are mounted
            # (seen under load in CI); the next tick finds them.
            return
        previous, self._previous = self._previous, snapshot
        if previous is not None and snapshot.now > previous.now:
            seconds = snapshot.now - previous.now
            moved = (
                snapshot.datagrams_in
                + snapshot.datagrams_out
                - previous.datagrams_in
                - previous.datagrams_out
            )
            self._rates.append(max(0.0, moved / seconds))
            if snapshot.relay_usage is not None and previous.relay_usage is not None:
                sent = snapshot.relay_usage.sent_bytes - previous.relay_usage.sent_bytes
                self._relay_rate = max(0.0, sent / seconds)
        self.query_one("#status-identity", Static).update(
            Content.assemble(
                ("address\n", "$text-muted"),
                snapshot.address.hex(),
                ("\ncard ", "$text-muted"),
                ("(ctrl+y copies it, ctrl+g shows its QR code)\n", "$text-muted italic"),
                snapshot.card,
            )
        )
        marks = ASCII_BUCKET_MARKS if self.ascii else BUCKET_MARKS
        node_rows = _rows(
            (
                "state",
                Content.styled(
                    snapshot.state, STATE_STYLES.get(snapshot.state, "bold $text-warning")
                ),
            ),
            ("listen", shown(snapshot.listen)),
            *((label, shown(value)) for label, value in reachability_rows(snapshot)),
            ("routing table", f"{snapshot.table_size} nodes"),
            ("buckets", bucket_bar(snapshot.bucket_fill, marks=marks) or marks[0]),
            ("outbox", f"{snapshot.outbox} waiting for an ack"),
        )
        if snapshot.state == "no peers":
            node_rows = Content.assemble(node_rows, ("\n" + NO_PEERS_HINT, "$text-warning italic"))
        self.query_one("#status-node", Static).update(node_rows)
        usage = snapshot.relay_usage
        # The caps in a block of their own: its short labels leave room for the bars.
        caps = (
            []
            if usage is None
            else [_rows(*relay_cap_rows(usage, self._relay_rate, ascii=self.ascii))]
        )
        self.query_one("#status-relay", Static).update(
            Content("\n").join(
                [
                    *caps,
                    _rows(
                        ("holding", f"{snapshot.stored_now} items, {size(snapshot.stored_bytes)}"),
                        ("stored for others", str(snapshot.stored_total)),
                        ("relayed", str(snapshot.relayed)),
                        ("acks seen", str(snapshot.acks_seen)),
                        ("expired", str(snapshot.expired)),
                        ("dropped invalid", str(snapshot.rejected)),
                        *(
                            (f"  {reason.replace('_', ' ')}", str(n))
                            for reason, n in snapshot.rejected_by_reason
                        ),
                    ),
                ]
            )
        )
        rate = self._rates[-1]
        self.query_one("#status-traffic", Static).update(
            _rows(
                ("in", f"{snapshot.datagrams_in} datagrams, {size(snapshot.bytes_in)}"),
                ("out", f"{snapshot.datagrams_out} datagrams, {size(snapshot.bytes_out)}"),
                ("now", f"{rate:.0f} datagrams/s (last {TRAFFIC_HISTORY_SAMPLES} s below)"),
            )
        )
        for sparkline in self.query(Sparkline):
            sparkline.data = list(self._rates)
        peers = [
            Content.assemble(
                short_address(peer.address),
                "  ",
                (shown(peer.endpoint).ljust(21), "$text-muted"),
                " ",
                ago(snapshot.now - peer.last_seen).rjust(4),
            )
            for peer in snapshot.peers
        ]
        self.query_one("#status-peers", Static).update(
            Content("\n").join(peers) if peers else Content.styled("none yet", "italic $text-muted")
        )
        self.query_one("#status-qr", QRCode).show(snapshot.card)
