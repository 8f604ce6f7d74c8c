"""Applications built on the public API: the ``rudp`` command line and file transfer."""
