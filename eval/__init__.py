"""Evaluation, one folder per task: ``sam`` (masks from embeddings against the teacher's: Table 6),
``cls`` (top-1/top-5 and Table 4's bands; Tables 1-3, 7-9), ``clip`` (zero-shot: Table 5, and the bands)."""

from mobilesam_srw.checkout import check_same_checkout

check_same_checkout(__file__, __name__)
