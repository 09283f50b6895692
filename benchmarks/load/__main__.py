"""``python -m benchmarks.load``: see ``benchmarks.load.cli``."""

from benchmarks.load.cli import main

raise SystemExit(main())
