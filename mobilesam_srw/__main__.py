"""``python -m mobilesam_srw`` is ``srw-sam``."""

import sys

from mobilesam_srw.cli import main

sys.exit(main())
