"""``python -m mxa``: the command line."""

import sys

from mxa.cli import main

sys.exit(main())
