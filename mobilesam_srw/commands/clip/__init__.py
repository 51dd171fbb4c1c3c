"""``srw-clip``: distil an open_clip image encoder (Section 4.2, sample-wise SRW); its table of subcommands."""

from __future__ import annotations

from mobilesam_srw.commands.clip import demo, export
from mobilesam_srw.commands.config_args import Program, config_command, files_written

PROGRAM = Program(
    "srw-clip",
    "Distil an open_clip image encoder into TinyViT with Sample-wise Re-Weighting (Yu et al., ACCV 2024, "
    "Section 4.2), with zero-shot evaluation by the teacher's text tower.",
    {
        "demo": demo.COMMAND,
        "precompute": config_command(
            "encode img2dataset image-text tars with the open_clip teacher into shards (run once, before training)",
            "mobilesam_srw.data_prep.clip.precompute:ClipPrecomputeConfig",
            "mobilesam_srw.data_prep.clip.precompute:run_clip_precompute"),
        "train": config_command(
            "distil a TinyViT student from the stored CLIP image embeddings with sample-wise SRW over the batch",
            "mobilesam_srw.clip.train:ClipTrainConfig", "mobilesam_srw.clip.train:train"),
        "eval": config_command(
            "zero-shot classification of students and teacher on an ImageFolder (ImageNet-1K val: Table 5)",
            "mobilesam_srw.eval.clip.evaluate:ClipEvalConfig", "mobilesam_srw.eval.clip.evaluate:evaluate_clip"),
        "bands": config_command(
            "draw Table 4's bands of an srw-clip eval --out (zero-shot top-1 per avesim band, SRW vs MSE, mean ± std "
            "over seeds), PNG and PDF", "mobilesam_srw.viz.clip:ClipBandsConfig",
            "mobilesam_srw.viz.clip:draw_clip_bands", report=files_written),
        "export": export.COMMAND,
    },
    needs=("open_clip", "open_clip is not installed; pip install 'mobilesam-srw[clip]'"),
)
