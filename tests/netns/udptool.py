"""A UDP socket driven by stdin, for tests of the emulated NATs themselves.

    python tests/netns/udptool.py PORT [--echo] [--join GROUP]

Binds 0.0.0.0:PORT. Each stdin line ``IP PORT DATA`` sends DATA there. Every datagram
received is printed as ``recv IP PORT DATA``; with ``--echo`` it is answered with
``seen IP:PORT`` (the source endpoint this socket observed: what a peer behind NAT
learns from a pong). ``--join GROUP`` joins an IPv4 multicast group on eth0. Prints
``ready`` once bound, and ``error ...`` when a send fails (an unreachable network).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--join", metavar="GROUP")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", args.port))
    if args.join:
        membership = socket.inet_aton(args.join) + socket.inet_aton("0.0.0.0")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    print("ready", flush=True)

    def receive() -> None:
        while True:
            data, (ip, port) = sock.recvfrom(2048)
            print(f"recv {ip} {port} {data.decode(errors='replace')}", flush=True)
            if args.echo and not data.startswith(b"seen "):
                sock.sendto(f"seen {ip}:{port}".encode(), (ip, port))

    threading.Thread(target=receive, daemon=True).start()
    for line in sys.stdin:
        ip, port, data = line.rstrip("\n").split(" ", 2)
        try:
            sock.sendto(data.encode(), (ip, int(port)))
        except OSError as exc:
            print(f"error {exc.strerror}", flush=True)


if __name__ == "__main__":
    main()
