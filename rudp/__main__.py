"""``python -m rudp``: the same as the ``rudp`` command."""

from rudp.apps.cli import main

raise SystemExit(main())
