"""``python -m jaxhw`` is the ``jaxhw`` command."""

import sys

from jaxhw.cli import main

if __name__ == "__main__":
  sys.exit(main())
