"""``python -m mobilesam_srw.clip`` is ``srw-clip`` (for ``torchrun -m mobilesam_srw.clip train ...``)."""

import sys

from mobilesam_srw.cli import clip_main

sys.exit(clip_main())
