#!/usr/bin/env python3
# Foundations of Python Network Programming - Chapter 2 - udp_local.py
# UDP client and server on localhost
#
# The book's program (Python 3), unchanged except for the line that creates the
# socket: rudp.socket() is socket-shaped, so bind / sendto / recvfrom /
# getsockname behave as with UDP, but every message arrives exactly once, in
# order.  RUDP_EXAMPLE_PORT overrides the port (0 picks a free one; the server
# prints it).
#
#   python examples/udp_local.py server
#   python examples/udp_local.py client

import os
import socket
import sys

import rudp

s = rudp.socket(socket.AF_INET, socket.SOCK_DGRAM)  # <-- the one changed line (was socket.socket)

MAX = 65535
PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "1060"))

if sys.argv[1:] == ["server"]:
    s.bind(("127.0.0.1", PORT))
    print("Listening at", s.getsockname())
    while True:
        data, address = s.recvfrom(MAX)
        print("The client at", address, "says", repr(data))
        s.sendto(b"Your data was %d bytes" % len(data), address)

elif sys.argv[1:] == ["client"]:
    print("Address before sending:", s.getsockname())
    s.sendto(b"This is my message", ("127.0.0.1", PORT))
    print("Address after sending", s.getsockname())
    data, address = s.recvfrom(MAX)  # overly promiscuous - see text!
    print("The server", address, "says", repr(data))

else:
    print("usage: udp_local.py server|client", file=sys.stderr)
