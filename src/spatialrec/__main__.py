"""``python -m spatialrec``: the ``spatialrec`` command (see :mod:`spatialrec.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
