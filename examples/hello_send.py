"""The "Hello!!" sender: the classic UDP send-side program, made reliable.

Unchanged except for the line that creates the socket (and the receiver's
address: the original sends to a LAN host, 192.168.1.224).  ``sendto`` returns
at once; ``close()`` lingers until the receiver has acknowledged the message
(or the linger time runs out), so the message is not lost if the program ends
right away.

Environment: ``RUDP_EXAMPLE_HOST`` (default 127.0.0.1) and ``RUDP_EXAMPLE_PORT``
(default 15001).
"""

import os
import socket

import rudp

HOST = os.environ.get("RUDP_EXAMPLE_HOST", "127.0.0.1")
PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "15001"))

s = rudp.socket(socket.AF_INET, socket.SOCK_DGRAM)  # <-- the one changed line (was socket.socket)
s.sendto(("Hello!!").encode(), (HOST, PORT))  # noqa: UP012 -- as in the original
s.close()
