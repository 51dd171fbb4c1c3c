"""``python -m mobilesam_srw`` is ``srw-sam`` (as ``python -m mobilesam_srw.sam``)."""

import sys

from mobilesam_srw.cli import run

sys.exit(run("srw-sam"))
