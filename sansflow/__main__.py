"""``python -m sansflow``: the command line (docs/cli.md). It lives with the adapters, since the
core package does no I/O."""

import sys

from sansflow.adapters._cli import main

sys.exit(main())
