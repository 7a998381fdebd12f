"""``python -m softseg ...``: the ``softseg`` command (:func:`softseg.cli.main`)."""

import sys

from softseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
