"""Figures, one module or folder per task: ``sam`` (SRW weight heatmaps, Figure 4; mask comparisons,
Figure 3), ``cls`` and ``clip`` (Table 4's bands); the figure files and style are shared."""

from mobilesam_srw.checkout import check_same_checkout

check_same_checkout(__file__, __name__)
