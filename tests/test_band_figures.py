"""Table 4 as a figure for classification and CLIP: runs grouped into arms, paired by seed, bad summaries refused."""

import json

import pytest

from mobilesam_srw.errors import SrwError
from mobilesam_srw.viz.bands import BandRun, _paired_differences
from mobilesam_srw.viz.clip import ClipBandsConfig, clip_band_runs, draw_clip_bands
from mobilesam_srw.viz.cls import ClsBandsConfig, cls_band_runs, draw_cls_bands

BANDS = ["1-16", "17-32", "33-48", "49-64"]


def cls_summary() -> dict:
    results = {"teacher": {"top1": 90.0, "bands": dict(zip(BANDS, [99.0, 95.0, 90.0, 76.0]))}}
    arms = {"teacher": {"method": None, "srw": None, "seed": None}}
    for seed in range(3):
        for srw in (False, True):
            label = f"kd{'_srw' if srw else ''}_seed{seed}"
            results[label] = {"top1": 80.0, "bands": dict(zip(BANDS, [98.0, 90.0, 80.0, 60.0 + seed + 2 * srw]))}
            arms[label] = {"method": "kd", "srw": srw, "tau": 0.7, "seed": seed}
    return {"dataset": "digits", "arms": arms, "results": results}


def test_cls_runs_pair_srw_with_its_baseline_by_seed():
    runs, names = cls_band_runs(cls_summary())
    assert names == BANDS and len(runs) == 6
    assert {run.arm for run in runs} == {"KD", "KD + SRW"}
    differences = _paired_differences(runs)
    assert list(differences) == ["KD + SRW"]
    assert differences["KD + SRW"] == [(0.0, 0.0, 0.0, 2.0)] * 3


def test_unpaired_runs_are_left_out_of_the_differences():
    runs = [BandRun("KD", None, 0, (1.0, 2.0)), BandRun("KD + SRW", "KD", 1, (3.0, 4.0))]
    assert _paired_differences(runs) == {}


def test_cls_and_clip_figures_are_written(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "summary.json").write_text(json.dumps(cls_summary()))
    paths = draw_cls_bands(ClsBandsConfig(eval=tmp_path / "cls", out=tmp_path / "figures"))
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    clip = {"bands": {"labels": BANDS}, "runs": [
        {"name": name, "loss": name, "seed": 0, "bands": dict(zip(BANDS, [50.0, 40.0, 30.0, 20.0 + (name == "srw")]))}
        for name in ("mse", "srw")]}
    (tmp_path / "clip.json").write_text(json.dumps(clip))
    runs, _ = clip_band_runs(clip)
    assert _paired_differences(runs) == {"srw": [(0.0, 0.0, 0.0, 1.0)]}
    assert len(draw_clip_bands(ClipBandsConfig(eval=tmp_path / "clip.json", out=tmp_path / "clipfig"))) == 2


@pytest.mark.parametrize("summary", [[], {"results": {}}, {"arms": {}, "results": {"teacher": {"bands": {}}}, "x": 1}])
def test_bad_summaries_are_one_line(tmp_path, summary):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SrwError):
        draw_cls_bands(ClsBandsConfig(eval=tmp_path, out=tmp_path / "figures"))
    assert not (tmp_path / "figures").exists()


def test_a_malformed_band_value_is_one_line():
    summary = cls_summary()
    summary["results"]["kd_seed0"]["bands"]["49-64"] = "lots"
    with pytest.raises(SrwError, match="band 49-64"):
        cls_band_runs(summary)
