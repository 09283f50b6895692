"""``python -m benchmarks.security``: see ``benchmarks.security.cli``."""

from benchmarks.security.cli import main

raise SystemExit(main())
