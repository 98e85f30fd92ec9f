"""``python -m lunglesionai``: the same command line as the ``lunglesionai`` console script."""

from .cli import main

raise SystemExit(main())
