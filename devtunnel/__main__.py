"""Allow ``python -m devtunnel``."""

from devtunnel.cli import main

raise SystemExit(main())
