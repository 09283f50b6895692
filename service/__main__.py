"""``python -m service``: the care-serve command line."""

from service.cli import main

raise SystemExit(main())
