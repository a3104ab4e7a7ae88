"""Where a run's lines go: any callable taking one line (``print`` by default, a test's list, the live lines)."""
from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]
