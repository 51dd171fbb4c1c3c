"""``srw-sam``: distil a SAM-family image encoder (MobileSAM's recipe, patch-wise SRW); its table of subcommands."""

from __future__ import annotations

from mobilesam_srw.commands.config_args import Program, config_command, files_written
from mobilesam_srw.commands.sam import demo, export, precompute, sample_data

PROGRAM = Program(
    "srw-sam",
    "Distil SAM's image encoder into MobileSAM's TinyViT with Sample-wise Re-Weighting (Yu et al., ACCV 2024).",
    {
        "demo": demo.COMMAND,
        "precompute": precompute.COMMAND,
        "train": config_command(
            "distil a MobileSAM student from precomputed teacher embeddings with patch-wise SRW",
            "mobilesam_srw.sam.train:SamTrainConfig", "mobilesam_srw.sam.train:train"),
        "export": export.COMMAND,
        "eval": config_command(
            "evaluate students against the teacher's masks from stored embeddings (Table 6: point grids, mIoU)",
            "mobilesam_srw.eval.sam.evaluate:EvalConfig", "mobilesam_srw.eval.sam.evaluate:evaluate"),
        "heatmap": config_command(
            "draw SRW patch-weight heatmaps of shard images (Figure 4), PNG and PDF",
            "mobilesam_srw.viz.sam.heatmap:HeatmapConfig", "mobilesam_srw.viz.sam.heatmap:draw_heatmaps",
            report=files_written),
        "compare": config_command(
            "draw teacher and students' masks side by side, boxes where runs differ (Figure 3), PNG and PDF",
            "mobilesam_srw.viz.sam.compare:CompareConfig", "mobilesam_srw.viz.sam.compare:draw_comparisons",
            report=files_written),
        "make-sample-data": sample_data.COMMAND,
    },
)
