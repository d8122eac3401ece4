"""Allow ``python -m comm_tui``."""

from comm_tui.cli import main

raise SystemExit(main())
