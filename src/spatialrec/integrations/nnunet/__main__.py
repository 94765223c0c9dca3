"""``python -m spatialrec.integrations.nnunet``: the command ``spatialrec-nnunet``."""

import sys

from .cli import main

sys.exit(main())
