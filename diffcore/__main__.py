"""``python -m diffcore``: the same as the ``diffcore`` command (:func:`diffcore.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
