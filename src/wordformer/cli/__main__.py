"""``python -m wordformer.cli``: the same as the ``wordformer`` command."""

import sys

from . import main

sys.exit(main())
