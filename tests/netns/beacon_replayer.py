"""A hostile LAN host for the namespace tests: it replays other nodes' LAN beacons from its
own address and sends beacons forged with their keys, and reports what that brings it.

    python tests/netns/beacon_replayer.py OWN_IP PORT

Prints ``ready``, then ``replayed N`` after each beacon it replays (genuine bytes, sent
again from its own address) and ``forged N`` (another node's key, signed by a key of its
own), and ``got N HOST`` for each datagram that arrives at PORT, where a replayed
beacon's port points (docs/PROTOCOL.md, "13.1": the endpoint is the beacon's source).
"""

from __future__ import annotations

import select
import socket
import sys

from comm_tui.crypto.identity import Identity
from comm_tui.net.lan import BEACON_BYTES, LAN_GROUP_V4, LAN_PORT, encode_beacon


def main() -> None:
    own_ip, port = sys.argv[1], int(sys.argv[2])
    eth0 = socket.if_nametoindex("eth0")
    group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    group.bind(("", LAN_PORT))
    mreqn = socket.inet_aton(LAN_GROUP_V4) + bytes(4) + eth0.to_bytes(4, "little")
    group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    group.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trap.bind((own_ip, port))
    mallory = Identity.generate()
    replayed = forged = got = 0
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([group, trap], [], [])
        if trap in ready:
            _, source = trap.recvfrom(2048)
            got += 1
            print(f"got {got} {source[0]}", flush=True)
        if group in ready:
            data, source = group.recvfrom(2048)
            if source[0] == own_ip or len(data) != BEACON_BYTES:
                continue
            group.sendto(data, (LAN_GROUP_V4, LAN_PORT))
            replayed += 1
            print(f"replayed {replayed}", flush=True)
            fake = bytearray(encode_beacon(mallory, port, 0))
            fake[5:37] = data[5:37]  # the victim's key, under Mallory's signature
            group.sendto(bytes(fake), (LAN_GROUP_V4, LAN_PORT))
            forged += 1
            print(f"forged {forged}", flush=True)


if __name__ == "__main__":
    main()
