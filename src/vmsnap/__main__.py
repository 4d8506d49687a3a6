"""``python -m vmsnap`` behaves as ``vmsnap``."""

from vmsnap.cli import main

raise SystemExit(main())
