"""``python -m aiolit``: the command line."""

from aiolit.cli import main

raise SystemExit(main())
