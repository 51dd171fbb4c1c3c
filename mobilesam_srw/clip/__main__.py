"""``python -m mobilesam_srw.clip`` is ``srw-clip`` (so ``torchrun -m mobilesam_srw.clip train ...`` runs it on every rank)."""

import sys

from mobilesam_srw.cli import run

sys.exit(run("srw-clip"))
