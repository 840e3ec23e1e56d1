"""``python -m feddns``: the same CLI as the ``feddns`` command."""

import sys

from feddns.cli import main

sys.exit(main())
