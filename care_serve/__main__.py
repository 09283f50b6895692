"""``python -m care_serve``: the care-serve command line."""

from care_serve.cli import main

raise SystemExit(main())
