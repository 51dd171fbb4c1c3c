"""``python -m mobilesam_srw.sam`` is ``srw-sam`` (so ``torchrun -m mobilesam_srw.sam train ...`` runs it on every rank)."""

import sys

from mobilesam_srw.cli import run

sys.exit(run("srw-sam"))
