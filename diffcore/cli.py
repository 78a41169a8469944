"""The ``diffcore`` command line (issue 12).

PLACEHOLDER: the commands are being written. This stub exists only so that the ``diffcore``
console script (pyproject.toml ``[project.scripts]``) and ``python -m diffcore`` resolve.
"""

from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffcore`` command. PLACEHOLDER: prints a notice and returns 2."""
    print("diffcore: the command line is being written", file=sys.stderr)
    return 2
