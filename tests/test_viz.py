"""Figures: files exist, decode as images of the expected size, and show srw_weights' values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilesam_srw.srw import srw_weights
from mobilesam_srw.viz.sam.compare import differing_boxes
from mobilesam_srw.viz.sam.heatmap import heatmap_figure, weight_map

from conftest import assert_one_line_error, read_all, run_cli


def test_plotted_weights_are_srw_weights(tiny_shards):
    sample = next(iter(read_all(tiny_shards).values()))
    figure = heatmap_figure(sample, tau=0.3)
    plotted = np.asarray(figure.axes[1].images[0].get_array())
    expected = srw_weights(torch.from_numpy(sample.avesim).flatten(), 0.3).view(16, 16).numpy()
    np.testing.assert_array_equal(plotted, expected)
    np.testing.assert_array_equal(weight_map(sample, 0.3), expected)
    assert abs(plotted.sum() - 1) < 1e-5
    overlay = figure.axes[2].images
    assert len(overlay) == 2 and overlay[1].get_alpha() == 0.5
    padded = np.asarray(figure.axes[0].images[0].get_array())
    height, width = sample.image.shape[:2]
    assert padded.shape == (256, 256, 3) and (padded[:height, :width] == sample.image).all()


def test_heatmaps_say_padding_only_where_there_is_some_and_share_a_perceptual_colour_range(tiny_shards):
    from dataclasses import replace

    from mobilesam_srw.viz.sam.heatmap import shared_colour_range

    samples = list(read_all(tiny_shards).values())[:3]
    wide = next(s for s in samples if s.image.shape[0] < s.image.shape[1])  # padded at the bottom
    square = replace(wide, image=np.zeros((256, 256, 3), np.uint8))  # fills the teacher's square: no padding
    low, high = shared_colour_range(samples, 0.5)
    assert low == min(weight_map(s, 0.5).min() for s in samples)
    assert high == max(weight_map(s, 0.5).max() for s in samples)
    for sample, padded in ((wide, True), (square, False)):
        figure = heatmap_figure(sample, 0.5, colour_range=(low, high))
        assert ("padding in grey" in figure.axes[0].get_title()) is padded
        shown = figure.axes[1].images[0]
        assert shown.get_cmap().name == "viridis" and shown.get_clim() == (low, high)
        assert figure.axes[2].images[1].get_clim() == (low, high)
        assert sample.key in figure._suptitle.get_text() and "shared" in figure._suptitle.get_text()
    own = heatmap_figure(wide, 0.5)
    assert own.axes[1].images[0].get_clim() == (weight_map(wide, 0.5).min(), weight_map(wide, 0.5).max())
    assert "its own range" in own._suptitle.get_text()


def test_comparisons_have_a_legend_of_their_boxes(tiny_shards):
    from mobilesam_srw.viz.sam.compare import compare_figure

    sample = next(iter(read_all(tiny_shards).values()))
    record = {"segmentation": np.zeros(sample.meta["original_size"], bool), "bbox": [10.0, 10.0, 40.0, 30.0]}
    figure = compare_figure(sample, {"teacher": [record], "srw": [record]}, [([10.0, 10.0, 40.0, 30.0], 0.5)],
                            prompts=[record["bbox"]], change="prompts whose IoU vs the teacher changes most")
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["box prompt (dashed white)", "prompts whose IoU vs the teacher changes most (solid red)"]
    everything = compare_figure(sample, {"teacher": [record], "srw": [record]}, [], change="teacher masks ...")
    assert [t.get_text() for t in everything.legends[0].get_texts()] == ["teacher masks ... (solid red)"]


@pytest.mark.slow
def test_heatmap_command_writes_png_and_pdf(tiny_shards, tmp_path):
    key = next(iter(read_all(tiny_shards, with_image=False)))
    result = run_cli("heatmap", "--shards", tiny_shards, "--keys", key, "--tau", "0.5", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / f"heatmap_{key}.png") as image:
        assert image.width > 1500 and 0.25 < image.height / image.width < 0.45  # 7 in wide at 300 dpi, 3 panels
    assert (tmp_path / f"heatmap_{key}.pdf").read_bytes().startswith(b"%PDF")
    assert_one_line_error(run_cli("heatmap", "--shards", tiny_shards, "--keys", "sa_999", "--out", tmp_path / "x"),
                          "not in the shards: sa_999")


@pytest.mark.slow
def test_compare_command(tiny_shards, two_runs, tmp_path):
    result = run_cli("compare", "--shards", tiny_shards, "--runs", *two_runs, "--grid", "4", "--first", "1",
                     "--pred-iou-thresh", "0", "--stability-thresh", "0", "--out", tmp_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    (png,) = tmp_path.glob("compare_*.png")
    with Image.open(png) as image:
        assert image.mode in ("RGB", "RGBA") and image.width > 1500 and 0.25 < image.height / image.width < 0.5
    assert png.with_suffix(".pdf").is_file()


def test_differing_boxes_pick_the_largest_change():
    def record(mask):
        ys, xs = np.nonzero(mask)
        return {"segmentation": mask, "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]}

    big, small = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    big[:32], small[40:48, 40:48] = True, True
    teacher = [record(big), record(small)]
    first = [record(big)]  # misses the small object
    last = [record(big), record(small)]  # recalls it
    boxes = differing_boxes(teacher, first, last, (64, 64), top=1)
    assert boxes == [([40.0, 40.0, 8.0, 8.0], 1.0)]
