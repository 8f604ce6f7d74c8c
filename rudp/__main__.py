"""``python -m rudp``: the same as the ``rudp`` command."""

from rudp.cli import main

raise SystemExit(main())
