"""``python -m bregnn``: the ``bregnn`` command (see :mod:`bregnn.cli`)."""

import sys

from bregnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
