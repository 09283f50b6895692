"""``python -m benchmarks.soak``: see ``benchmarks.soak.cli``."""

from benchmarks.soak.cli import main

raise SystemExit(main())
