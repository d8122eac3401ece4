"""A lost session between real nodes (UDP on 127.0.0.1, SQLite files): one side's
database is restored from an old copy; the loss is detected, a notice is shown on the
other side, the session is re-established and the unacknowledged text arrives.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat

from comm_tui.net.service import NoticeAdded
from comm_tui.store.db import SESSION_RESET_NOTICE
from tests.test_integration import Network, Peer, first_hop, net, until

__all__ = ["net"]  # the fixture, imported for pytest


async def exchange(network: Network, sender: Peer, recipient: Peer, tag: str) -> None:
    """One text each way, each waited for."""
    row = sender.running.send_text(recipient.identity.public, f"{tag}: from the sender")
    await until(lambda: f"{tag}: from the sender" in recipient.received(), f"{tag} to arrive")
    await until(lambda: sender.state_of(row.text_id) == "delivered", f"{tag} to be acked")
    back = recipient.running.send_text(sender.identity.public, f"{tag}: reply")
    await until(lambda: f"{tag}: reply" in sender.received(), f"the {tag} reply")
    await until(lambda: recipient.state_of(back.text_id) == "delivered", f"{tag} reply acked")


async def test_restored_backup_loses_the_session_and_it_is_reestablished_visibly(
    net: Network,
) -> None:
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to join")
    await exchange(net, sender, recipient, "first")
    await exchange(net, sender, recipient, "second")

    await net.stop(recipient)  # a backup of its profile
    backup = recipient.db_path.with_suffix(".backup")
    shutil.copy2(recipient.db_path, backup)
    await net.start(recipient, first_hop(net))
    await exchange(net, sender, recipient, "third")  # the sessions move on
    await net.stop(recipient)
    for suffix in ("-wal", "-shm"):
        recipient.db_path.with_name(recipient.db_path.name + suffix).unlink(missing_ok=True)
    shutil.copy2(backup, recipient.db_path)  # ... and the backup is restored
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to rejoin")

    row = sender.running.send_text(recipient.identity.public, "after the restore")
    await until(lambda: "after the restore" in recipient.received(), "the text, re-sent")
    await until(lambda: sender.state_of(row.text_id) == "delivered", "its ack")
    assert recipient.running.node.stats.handshakes_sent >= 1
    notices = [e for e in sender.events if isinstance(e, NoticeAdded)]
    assert [n.row.text for n in notices] == [SESSION_RESET_NOTICE]
    assert sender.db is not None
    history = sender.db.history(recipient.identity.address)
    assert [r.direction for r in history].count("notice") == 1
    # The conversation goes on, without another reset.
    await exchange(net, sender, recipient, "fourth")
    assert len([e for e in sender.events if isinstance(e, NoticeAdded)]) == 1


async def test_session_and_prekey_state_is_private_and_restored(net: Network) -> None:
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to join")
    await exchange(net, sender, recipient, "first")
    assert stat.S_IMODE(recipient.db_path.stat().st_mode) == 0o600
    bundle = recipient.running.node._prekeys.public_bundle()
    await net.stop(recipient)
    conn = sqlite3.connect(recipient.db_path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM crypto_state")}
    finally:
        conn.close()
    assert names == {"prekeys", "session:" + sender.identity.key.hex()}
    await net.start(recipient, first_hop(net))
    assert recipient.running.node._prekeys.public_bundle() == bundle
    await exchange(net, sender, recipient, "second")  # the restored session goes on
    assert not [e for e in sender.events if isinstance(e, NoticeAdded)]
