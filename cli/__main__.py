"""`python -m cli`: see `python -m cli --help`."""

from __future__ import annotations

from cli.commands import main

raise SystemExit(main())
