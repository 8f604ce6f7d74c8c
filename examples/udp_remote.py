#!/usr/bin/env python3
# Foundations of Python Network Programming - Chapter 2 - udp_remote.py
# UDP client and server for talking over the network
#
# The book's program (Python 3), unchanged except for the line that creates the
# socket.  The server still "pretends to drop" half of the requests and the
# client still backs off on its own (0.1 s, doubling, giving up above 2.0 s):
# rudp delivers every request exactly once, but the *application* decides not to
# answer some of them, and ``except socket.timeout`` still catches rudp's
# timeout (rudp.Timeout subclasses TimeoutError, which socket.timeout is).
# RUDP_EXAMPLE_PORT overrides the port (0 picks a free one; the server prints it).
#
#   python examples/udp_remote.py server [ <interface> ]
#   python examples/udp_remote.py client <host>

import os
import random
import socket
import sys

import rudp

s = rudp.socket(socket.AF_INET, socket.SOCK_DGRAM)  # <-- the one changed line (was socket.socket)

MAX = 65535
PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "1060"))

if 2 <= len(sys.argv) <= 3 and sys.argv[1] == "server":
    interface = sys.argv[2] if len(sys.argv) > 2 else ""
    s.bind((interface, PORT))
    print("Listening at", s.getsockname())
    while True:
        data, address = s.recvfrom(MAX)
        if random.randint(0, 1):
            print("The client at", address, "says:", repr(data))
            s.sendto(b"Your data was %d bytes" % len(data), address)
        else:
            print("Pretending to drop packet from", address)

elif len(sys.argv) == 3 and sys.argv[1] == "client":
    hostname = sys.argv[2]
    s.connect((hostname, PORT))
    print("Client socket name is", s.getsockname())
    delay = 0.1
    while True:
        s.send(b"This is another message")
        print("Waiting up to", delay, "seconds for a reply")
        s.settimeout(delay)
        try:
            data = s.recv(MAX)
        except socket.timeout:  # noqa: UP041 -- the book's spelling, on purpose
            delay *= 2  # wait even longer for the next request
            if delay > 2.0:
                raise RuntimeError("I think the server is down") from None
        except:
            raise  # a real error, so we let the user see it
        else:
            break  # we are done, and can stop looping

    print("The server says", repr(data))

else:
    print("usage: udp_remote.py server [ <interface> ]", file=sys.stderr)
    print("   or: udp_remote.py client <host>", file=sys.stderr)
    sys.exit(2)
