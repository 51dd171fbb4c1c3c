"""``srw-cls eval`` and ``srw-cls table``: accuracy and Table 4's bands of runs; the paper's tables."""
