"""The "Hello!!" receiver: the classic UDP receive-side program, made reliable.

This is the introductory UDP receiver found in many tutorials, unchanged except
for the line that creates the socket.  Run ``hello_recv.py`` first, then
``hello_send.py`` in another terminal.  With plain UDP the message is lost if
the receiver is not running yet; with rudp the sender retransmits until the
receiver answers, and ``close()`` waits until the message was acknowledged.

Environment: ``RUDP_EXAMPLE_PORT`` (default 15001, as in the original) and
``RUDP_EXAMPLE_BIND`` (default ``""``, every interface, as in the original; the
tests use 127.0.0.1).
"""

import os
import socket

import rudp

PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "15001"))
BIND = os.environ.get("RUDP_EXAMPLE_BIND", "")

s = rudp.socket(socket.AF_INET, socket.SOCK_DGRAM)  # <-- the one changed line (was socket.socket)
s.bind((BIND, PORT))
data, address = s.recvfrom(1024)
print(data)
s.close()
