"""``python -m lunglesionai``: the same command line as the ``lunglesionai`` console script."""

from lunglesionai.app.cli import main

raise SystemExit(main())
