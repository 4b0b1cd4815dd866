"""``python -m morphospace``."""

import sys

from morphospace.cli import main

sys.exit(main())
