"""``srw-sam heatmap`` (Figure 4) and ``srw-sam compare`` (Figure 3)."""
