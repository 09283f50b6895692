"""``python -m benchmarks.model``: see ``benchmarks.model.cli``."""

from benchmarks.model.cli import main

raise SystemExit(main())
