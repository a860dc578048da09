"""The build scripts and their package (debbuild) live in packaging/, which is not itself a Python
package (it would shadow PyPA's ``packaging``, which the build uses): import them from there."""

import sys
from pathlib import Path

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
if str(PACKAGING) not in sys.path:
    sys.path.insert(0, str(PACKAGING))
