"""Process-wide settings, imported first by every benchmark module (before torch).

``import wordformer`` sets ``OMP_WAIT_POLICY=PASSIVE`` when the machine is busy at import (1-minute load
average >= cores), which only works before torch is imported. The benchmarks import torch first and must
not import wordformer in the peer's memory child, so the same rule is applied here; keep it in step with
``src/wordformer/__init__.py``. An explicit ``OMP_WAIT_POLICY`` in the environment wins.
"""

import os

try:
    if os.getloadavg()[0] >= (os.cpu_count() or 1):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
except OSError:  # pragma: no cover - no load average on this platform
    pass
