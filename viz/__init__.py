"""Figures: SRW weight heatmaps and mask comparisons."""
