"""Make the repository's `bench` package importable under plain `pytest`.

`bench/` is a top-level folder run with `python -m bench`, not an installed
package, and the `pytest` script does not put the working directory on
sys.path. (`pythonpath = ["."]` in pyproject's pytest options would do the
same for every folder; then this file can go.)
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[3])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
