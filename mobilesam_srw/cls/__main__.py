"""``python -m mobilesam_srw.cls`` is ``srw-cls`` (so ``torchrun -m mobilesam_srw.cls train ...`` runs it on every rank)."""

import sys

from mobilesam_srw.cli import run

sys.exit(run("srw-cls"))
