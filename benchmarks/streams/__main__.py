"""``python -m benchmarks.streams``: see ``benchmarks.streams.cli``."""

from benchmarks.streams.cli import main

raise SystemExit(main())
