"""Process-wide settings, imported first by every benchmark module (before torch).

Importing ``wordformer`` first does this already: it sets ``OMP_WAIT_POLICY=PASSIVE`` only when the machine
is busy at import (load average >= cores), and that only works before torch is imported. Importing the
package here applies the same rule to both models measured in a process; an explicit ``OMP_WAIT_POLICY``
in the environment wins.
"""

import wordformer  # noqa: F401  (sets the OpenMP wait policy before torch is imported)
