"""``python -m wordformer``: the same as the ``wordformer`` command."""

import sys

from .cli import main

sys.exit(main())
