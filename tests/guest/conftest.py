"""Make the guest package importable on the host: it lives in refguest/ and is not installed."""

import sys
from pathlib import Path

_REFGUEST = str(Path(__file__).resolve().parents[2] / "refguest")
if _REFGUEST not in sys.path:
    sys.path.insert(0, _REFGUEST)
