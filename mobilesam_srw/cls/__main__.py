"""``python -m mobilesam_srw.cls`` is ``srw-cls`` (for ``torchrun -m mobilesam_srw.cls train ...``)."""

import sys

from mobilesam_srw.cli import cls_main

sys.exit(cls_main())
