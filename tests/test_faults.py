"""Hostile input, class by class (issue 13), through the CLI run in process (fast): every fault is one line and exit code 2, nothing escapes the
output folder, one writer per folder, and what was already written survives.

Faults of precompute's inputs (bad samples and annotations) are tried in test_precompute.py,
test_sa1b.py and test_image_inputs.py; run-folder leftovers and resume in test_engine.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import webdataset as wds

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock

from conftest import assert_one_line_error, run_in_process

TRAIN = ["--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "1", "--workers", "0", "--no-progress",
         "--device", "cpu"]


def write_samples(path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)


def sample(key: str, embedding=None, jpeg: bytes | None = None) -> dict:
    embedding = np.zeros((256, 16, 16), np.float32) if embedding is None else embedding
    image = shards.encode_image(np.zeros((256, 200, 3), np.uint8)) if jpeg is None else jpeg
    return {"__key__": key, "jpg": image, shards.EMBEDDING_FIELD: shards.npy_bytes(embedding),
            shards.META_FIELD: b'{"original_size": [256, 200], "input_size": [256, 200]}'}


# --- 3. data never chooses where we write; unsafe keys are refused when read ------------------------------

@pytest.mark.parametrize("key", ["x..y", "a" * 200, "spa ce", "semi;colon", "uni\u00e9"])
def test_unsafe_keys_in_a_shard_are_one_line(tmp_path, key):
    path = tmp_path / "shard-000000.tar"
    write_samples(path, [sample(key)])
    with pytest.raises(SrwError, match="not a safe sample key|not a precompute shard"):
        shards.read_indexed(shards.index_shards([str(path)])[0])
    with pytest.raises(ValueError, match="not a safe sample key"):  # streamed readers (eval, figures) too
        shards.decode_sample({**sample(key), "__key__": key})


# --- 4. one writer per output folder -------------------------------------------------------------------------

def test_a_second_writer_is_refused(tiny_shards, tmp_path):
    out = tmp_path / "run"
    with output_lock(out):
        result = run_in_process("train", "--shards", tiny_shards, *TRAIN, "--out", out)
    assert_one_line_error(result, "is in use by another srw job")
    assert not (out / "student.pt").exists()


# --- 5. what is read is not trusted ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (lambda: sample("sa_1", jpeg=b"not a jpeg"), "not a decodable JPEG"),
    (lambda: sample("sa_1", embedding=np.zeros((256, 16, 16), np.complex64)), "is not a stored embedding"),
    (lambda: {**sample("sa_1"), shards.EMBEDDING_FIELD: b"\x93NUMPY garbage"}, "shard "),
])
def test_bad_members_inside_a_shard_are_one_line(tmp_path, bad, message):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_samples(folder / "shard-000000.tar", [bad(), sample("sa_2"), sample("sa_3"), sample("sa_4")])
    result = run_in_process("train", "--shards", folder, *TRAIN, "--out", tmp_path / "run")
    assert_one_line_error(result, message)


def test_a_truncated_shard_and_a_malformed_manifest_are_one_line(tiny_shards, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    data = sorted(tiny_shards.glob("shard-*.tar"))[0].read_bytes()
    (folder / "shard-000000.tar").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_in_process("train", "--shards", folder, *TRAIN, "--out", tmp_path / "a"), "shard")
    broken = tmp_path / "manifest"
    broken.mkdir()
    (broken / "shard-000000.tar").write_bytes(sorted(tiny_shards.glob("shard-*.tar"))[0].read_bytes())
    for text in ("{not json", "[1, 2]", '{"a": ' * 5000 + "1" + "}" * 5000):
        (broken / "manifest.json").write_text(text)
        assert_one_line_error(run_in_process("train", "--shards", broken, *TRAIN, "--out", tmp_path / "b"), "manifest")


# --- 6. every bad value: one line, exit 2, before any folder -------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("--lr", "nan", "--lr must be a finite number"),
    ("--warmup", "nan", "--warmup must be a finite number"),
    ("--weight-decay", "-5", "--weight-decay must be >= 0"),
    ("--workers", "-1", "--workers must be >= 0"),
    ("--max-steps", "0", "--max-steps must be >= 1"),
    ("--max-steps", "-3", "--max-steps must be >= 1"),
    ("--tau", "inf", "--tau must be a finite number"),
    ("--device", "bogus", "--device must be"),
    ("--device", "cuda", "no CUDA GPU"),
])
def test_bad_training_values(tiny_shards, tmp_path, option, value, message):
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "run"
    assert_one_line_error(run_in_process("train", "--shards", tiny_shards, *TRAIN, option, value, "--out", out), message)
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["train", "--shards", "SHARDS", *TRAIN],
    ["eval", "--shards", "SHARDS", "--student", "RUN", "--grid", "2", "--device", "cpu", "--no-progress"],
])
def test_out_that_is_a_file(tiny_shards, two_runs, tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    command = [str(tiny_shards) if a == "SHARDS" else str(two_runs[0]) if a == "RUN" else a for a in command]
    assert_one_line_error(run_in_process(*command, "--out", blocker), "is not a folder")
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_points_per_batch(tiny_shards, two_runs, tmp_path, value):
    result = run_in_process("eval", "--shards", tiny_shards, "--student", two_runs[0], "--points-per-batch", value,
                     "--out", tmp_path / "r", "--device", "cpu")
    assert_one_line_error(result, "--points-per-batch must be >= 1")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, "list", "tensor"])
def test_bad_checkpoints_are_one_line(tiny_shards, tmp_path, content):
    path = tmp_path / "weights.pt"
    if content == "list":
        torch.save([1, 2, 3], path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path.write_bytes(content)
    result = run_in_process("train", "--shards", tiny_shards, *TRAIN, "--init", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "checkpoint")
    assert not (tmp_path / "run" / "student.pt").exists()


def test_a_second_precompute_or_eval_into_a_busy_folder_is_refused(sample_sa1b, tiny_shards, two_runs, tmp_path):
    busy = tmp_path / "busy"
    with output_lock(busy):
        precompute = run_in_process("precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--subset", "all",
                             "--out", busy, "--workers", "0", "--no-progress", "--device", "cpu")
        evaluation = run_in_process("eval", "--shards", tiny_shards, "--student", two_runs[0], "--grid", "2",
                             "--out", busy, "--device", "cpu", "--no-progress")
    assert_one_line_error(precompute, "is in use by another srw job")
    assert_one_line_error(evaluation, "is in use by another srw job")
    assert not list(busy.glob("shard-*.tar")) and not (busy / "summary.json").exists()


# --- 5. evaluation and figures: NaN/inf embeddings, missing avesim, bad records, hostile annotations ----------

EVAL = ["--grid", "2", "--device", "cpu", "--no-progress"]


def rewrite_shards(folder, change) -> None:
    """Rewrite every sample of the folder's shards through ``change(index, raw) -> raw`` (raw fields, bytes)."""
    index = 0
    for path in sorted(folder.glob("shard-*.tar")):
        raws = list(wds.DataPipeline(wds.SimpleShardList([str(path)]), wds.tarfile_to_samples()))
        changed = []
        for raw in raws:
            changed.append(change(index, {k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}))
            index += 1
        write_samples(path, changed)


def poison(raw: dict, value: float) -> dict:
    embedding = shards.decode_embedding(raw, as_float32=False).copy()
    embedding[3, 2, 1] = value
    return {**raw, shards.EMBEDDING_FIELD: shards.npy_bytes(embedding)}


def with_meta(raw: dict, **changes) -> dict:
    return {**raw, shards.META_FIELD: json.dumps({**json.loads(raw[shards.META_FIELD]), **changes}).encode()}


@pytest.fixture
def copied_shards(tiny_shards, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(tiny_shards, folder)
    return folder


def test_non_finite_teacher_embeddings_are_skipped_counted_and_reported(copied_shards, two_runs, tmp_path):
    values = {0: np.nan, 2: np.inf, 3: -np.inf}
    rewrite_shards(copied_shards, lambda i, raw: poison(raw, values[i]) if i in values else raw)
    out = tmp_path / "report"
    result = run_in_process("eval", "--shards", copied_shards, "--student", *two_runs, *EVAL, "--limit", "6", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_images"] == {"non-finite teacher embedding": 3} and summary["images"] == 3
    assert all(0 <= summary["miou"][run]["2"] <= 100 for run in ("mse", "srw"))
    assert "3 images left out for every run (non-finite teacher embedding: 3)" in (out / "table.md").read_text()
    assert "3 skipped" in result.stderr
    rewrite_shards(copied_shards, lambda i, raw: poison(raw, np.nan))  # nothing left: one line, no report
    result = run_in_process("eval", "--shards", copied_shards, "--student", two_runs[0], *EVAL, "--out", tmp_path / "none")
    assert_one_line_error(result, "no images were evaluated (skipped: non-finite teacher embedding: 12)")
    assert not (tmp_path / "none" / "summary.json").exists()


def test_a_student_with_non_finite_embeddings_is_one_line(tiny_shards, two_runs, tmp_path):
    from mobilesam_srw.sam import checkpoint

    student, _ = checkpoint.load_student(two_runs[0])
    with torch.no_grad():
        next(student.parameters()).fill_(float("nan"))
    broken = tmp_path / "broken"
    checkpoint.save(broken / checkpoint.STUDENT_FILE, checkpoint.student_record(student))
    result = run_in_process("eval", "--shards", tiny_shards, "--student", two_runs[0], broken, *EVAL, "--limit", "2",
                     "--out", tmp_path / "r")
    assert_one_line_error(result, "no images were evaluated (skipped: non-finite broken embedding: 2)")
    result = run_in_process("compare", "--shards", tiny_shards, "--runs", two_runs[0], broken, "--first", "1", "--grid", "2",
                     "--device", "cpu", "--out", tmp_path / "figures")
    assert_one_line_error(result, "student broken's embedding has NaN or inf values")


def test_shards_without_avesim_are_evaluated_and_drawn(copied_shards, two_runs, tmp_path):
    stored = {s.key: s.avesim for s in shards.iterate_shards(shards.shard_paths([copied_shards]), with_image=False)}
    rewrite_shards(copied_shards, lambda i, raw: {k: v for k, v in raw.items() if k != shards.AVESIM_FIELD})
    for computed in shards.iterate_shards(shards.shard_paths([copied_shards]), with_image=False):
        np.testing.assert_allclose(computed.avesim, stored[computed.key], atol=2e-3)  # from fp16 storage
    result = run_in_process("eval", "--shards", copied_shards, "--student", *two_runs, *EVAL, "--limit", "2",
                     "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    result = run_in_process("heatmap", "--shards", copied_shards, "--first", "1", "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    rewrite_shards(copied_shards, lambda i, raw: poison(raw, np.nan))  # avesim computed from NaN: refused
    result = run_in_process("heatmap", "--shards", copied_shards, "--first", "1", "--out", tmp_path / "nan")
    assert_one_line_error(result, "has NaN or inf values")
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize("change, message", [
    (lambda raw: {**raw, shards.META_FIELD: b"[1, 2]"}, "json: not an object"),
    (lambda raw: {**raw, shards.META_FIELD: b"{broken"}, "Expecting property name"),
    (lambda raw: with_meta(raw, original_size=None), "original_size is not [h, w]"),
    (lambda raw: with_meta(raw, input_size=[0, 5]), "input_size is not [h, w]"),
    (lambda raw: with_meta(raw, input_size=[100, 100]), "the record's input_size is 100x100"),
    (lambda raw: {**raw, shards.AVESIM_FIELD: shards.npy_bytes(np.zeros((3, 3), np.float32))}, "avesim: a float32"),
    (lambda raw: {**raw, shards.EMBEDDING_FIELD: shards.npy_bytes(np.zeros(256, np.float16))}, "is not [C, H, W]"),
])
def test_bad_records_are_one_line_in_eval_and_figures(copied_shards, two_runs, tmp_path, change, message):
    rewrite_shards(copied_shards, lambda i, raw: change(raw) if i == 0 else raw)
    for command in (["eval", "--student", two_runs[0], *EVAL], ["heatmap", "--first", "1"]):
        result = run_in_process(command[0], "--shards", copied_shards, *command[1:], "--out", tmp_path / command[0])
        assert_one_line_error(result, message)
        assert "shard-000000.tar" in result.stderr
        assert not (tmp_path / "heatmap").exists()


def test_gt_metrics_stay_in_range_whatever_the_annotations(copied_shards, two_runs, tmp_path):
    """Annotations that did not come from our precompute are validated again at eval: dropped and counted."""
    def hostile(index: int, raw: dict) -> dict:
        meta = json.loads(raw[shards.META_FIELD])
        good = meta["annotations"][0]
        height, width = meta["original_size"]
        if index == 1:
            return with_meta(raw, annotations={"not": "a list"})
        bad = [
            {**good, "segmentation": {"size": [1, 1], "counts": "01"}},  # RLE of another image size
            {**good, "segmentation": {"size": [height, width], "counts": "@@@@"}},  # malformed runs
            {**good, "bbox": [width - 1, height - 1, 50, 50]},  # box leaves the image
            {**good, "point_coords": [[-5, 3]]},  # click outside
            {**good, "segmentation": {"size": [height, width], "counts": [height * width]}},  # empty mask
            "not an object",
            {**good, "bbox": [0, 0, float("inf"), 3]},
        ]
        return with_meta(raw, annotations=[good, *bad])

    rewrite_shards(copied_shards, hostile)
    out = tmp_path / "gt"
    result = run_in_process("eval", "--shards", copied_shards, "--student", *two_runs, "--mode", "gt", "--prompt", "box",
                     "--limit", "3", "--device", "cpu", "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotations_dropped"] == 7 + 1 + 7 and summary["masks"] == 2
    values = [*summary["miou"].values(), *summary["miou_vs_teacher"].values()]
    assert all(0 <= value <= 100 for value in values), values
    assert "15 invalid annotations left out" in (out / "table.md").read_text()


# --- 4 and 6 for figures: one writer per folder, bad values before any folder ---------------------------------

def test_figures_into_a_busy_folder_are_refused(tiny_shards, two_runs, tmp_path):
    busy = tmp_path / "busy"
    with output_lock(busy):
        heatmap = run_in_process("heatmap", "--shards", tiny_shards, "--first", "1", "--out", busy)
        compare = run_in_process("compare", "--shards", tiny_shards, "--runs", *two_runs, "--first", "1", "--grid", "2",
                          "--device", "cpu", "--out", busy)
    assert_one_line_error(heatmap, "is in use by another srw job")
    assert_one_line_error(compare, "is in use by another srw job")
    assert not list(busy.glob("*.png"))


@pytest.mark.parametrize("command, option, value, message", [
    ("heatmap", "--first", "0", "--first must be >= 1"),
    ("heatmap", "--first", "-2", "--first must be >= 1"),
    ("heatmap", "--tau", "0", "--tau must be >= 0.0001"),
    ("heatmap", "--tau", "nan", "--tau must be a finite number"),
    ("heatmap", "--keys", "sa_999", "--keys: not in the shards"),
    ("compare", "--grid", "0", "--grid must be >= 1"),
    ("compare", "--pred-iou-thresh", "nan", "--pred-iou-thresh must be a finite number"),
    ("compare", "--stability-thresh", "-1", "--stability-thresh must be >= 0"),
    ("compare", "--device", "bogus", "--device must be"),
    ("compare", "--first", "0", "--first must be >= 1"),
])
def test_bad_figure_values(tiny_shards, two_runs, tmp_path, command, option, value, message):
    runs = ["--runs", *two_runs, "--device", "cpu"] if command == "compare" else []
    out = tmp_path / "figures"
    assert_one_line_error(run_in_process(command, "--shards", tiny_shards, *runs, option, value, "--out", out), message)
    assert not out.exists()


@pytest.mark.parametrize("command", ["heatmap", "compare"])
def test_figure_out_that_is_a_file(tiny_shards, two_runs, tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    runs = ["--runs", *two_runs, "--device", "cpu"] if command == "compare" else []
    assert_one_line_error(run_in_process(command, "--shards", tiny_shards, *runs, "--out", blocker), "is not a folder")
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("pattern", ["{folder}", "{folder}/*.tar", "{folder}/shard-00000[0-2].tar"])
def test_a_manifest_listing_shards_that_are_gone_is_one_line(copied_shards, two_runs, tmp_path, pattern):
    (copied_shards / "shard-000001.tar").unlink()
    given = pattern.format(folder=copied_shards)
    for command in (["train", *TRAIN], ["eval", "--student", two_runs[0], *EVAL], ["heatmap"]):
        out = tmp_path / command[0]
        result = run_in_process(command[0], "--shards", given, *command[1:], "--out", out)
        assert_one_line_error(result, "lists 1 shard(s) that are missing, e.g. shard-000001.tar")
        assert not out.exists()
    assert run_in_process("heatmap", "--shards", f"{copied_shards}/shard-000000.tar", "--first", "1",
                   "--out", tmp_path / "one").returncode == 0  # the shards asked for are all there


@pytest.mark.parametrize("shards_entry", ['"x"', '[1]', '[{"name": "../x.tar", "samples": 1}]',
                                          '[{"name": "a.tar", "samples": "4"}]'])
def test_a_manifest_with_a_malformed_shard_list_is_one_line(copied_shards, tmp_path, shards_entry):
    manifest = json.loads((copied_shards / "manifest.json").read_text())
    (copied_shards / "manifest.json").write_text(json.dumps({**manifest, "shards": json.loads(shards_entry)}))
    result = run_in_process("train", "--shards", copied_shards, *TRAIN, "--out", tmp_path / "run")
    assert_one_line_error(result, "its shards are not a list of {name, samples} entries")


def test_out_under_a_file_is_one_line(tiny_shards, two_runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for command in (["train", "--shards", tiny_shards, *TRAIN], ["heatmap", "--shards", tiny_shards, "--first", "1"],
                    ["eval", "--shards", tiny_shards, "--student", two_runs[0], *EVAL]):
        result = run_in_process(*command, "--out", blocker / "sub")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
    assert blocker.read_text() == "mine"


def test_a_job_that_fails_before_writing_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "report"
    with pytest.raises(SrwError, match="failed"):
        with output_lock(out):
            raise SrwError("failed")
    assert not (tmp_path / "new").exists()  # nor the parent it made
    kept = tmp_path / "kept"
    with pytest.raises(SrwError):
        with output_lock(kept):
            (kept / "partial.json").write_text("{}")
            raise SrwError("failed")
    assert (kept / "partial.json").is_file()  # what was written stays
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(SrwError):
        with output_lock(existing):
            raise SrwError("failed")
    assert existing.is_dir()  # a folder the user had stays
    with output_lock(existing):
        assert (existing / ".srw.lock").is_file()
    assert list(existing.iterdir()) == []  # a job that ends leaves no lock file


def test_a_lock_file_removed_by_its_holder_is_not_taken(tmp_path):
    """A job that opened the lock file just before its holder removed it locks the folder's new file instead."""
    import fcntl
    import os

    folder = tmp_path / "out"
    folder.mkdir()
    stale = os.open(folder / ".srw.lock", os.O_RDWR | os.O_CREAT)  # a file its holder is about to remove
    (folder / ".srw.lock").unlink()
    try:
        with output_lock(folder):
            fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode is free: not what the job holds
            assert (folder / ".srw.lock").is_file()
            with pytest.raises(SrwError, match="in use by another srw job"):
                with output_lock(folder):
                    pass
    finally:
        os.close(stale)


@pytest.mark.slow
def test_a_killed_eval_leaves_nothing_behind(tiny_shards, two_runs, tmp_path):
    """SIGTERM (kill) interrupts eval as Ctrl-C does: no lock file, and no report folder since nothing was written."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "reports" / "grid"
    job = subprocess.Popen([sys.executable, "-m", "mobilesam_srw", "eval", "--shards", str(tiny_shards), "--student",
                            str(two_runs[0]), "--grid", "64", "--device", "cpu", "--no-progress", "--out", str(out)],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / ".srw.lock").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130 and "interrupted" in stderr, stderr
    assert not (tmp_path / "reports").exists()


def test_a_text_file_as_checkpoint_names_what_it_is(tiny_shards, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("hello world\n")
    result = run_in_process("train", "--shards", tiny_shards, *TRAIN, "--init", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "not a PyTorch checkpoint of weights (KeyError")


def test_ground_truth_modes_on_shards_without_annotations_are_one_line(copied_shards, two_runs, tmp_path):
    rewrite_shards(copied_shards, lambda i, raw: with_meta(raw, annotations=[]))  # as --images input makes them
    result = run_in_process("eval", "--shards", copied_shards, "--student", two_runs[0], "--mode", "gt", "--limit", "2",
                     "--device", "cpu", "--no-progress", "--out", tmp_path / "reports" / "gt")
    assert_one_line_error(result, "these shards hold no valid annotations: --mode gt needs SA-1B or --coco input; "
                                  "use --mode teacher-box")
    assert not (tmp_path / "reports").exists()  # no folder left, not even the parent
    result = run_in_process("compare", "--shards", copied_shards, "--runs", *two_runs, "--prompt", "box", "--first", "1",
                     "--device", "cpu", "--no-progress", "--out", tmp_path / "figures")
    assert_one_line_error(result, "--prompt box: the chosen samples hold no valid annotation boxes (shards of --images "
                                  "input have none); use --prompt teacher-box")
    assert not (tmp_path / "figures").exists()
    manifest = json.loads((copied_shards / "manifest.json").read_text())
    (copied_shards / "manifest.json").write_text(json.dumps({**manifest, "input": {"kind": "images"}}))
    result = run_in_process("eval", "--shards", copied_shards, "--student", two_runs[0], "--mode", "gt",
                            "--device", "cpu", "--no-progress", "--out", tmp_path / "reports" / "gt")
    assert_one_line_error(result, "--mode gt needs annotations, and these shards were made from --images input "
                                  "(none): use --mode teacher-box")  # said before any image is read
    assert not (tmp_path / "reports").exists()
    result = run_in_process("compare", "--shards", copied_shards, "--runs", *two_runs, "--prompt", "teacher-box",
                            "--box-grid", "2", "--first", "1", "--device", "cpu", "--no-progress",
                            "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr  # boxes from the teacher's masks need no annotations
    assert sorted(path.suffix for path in (tmp_path / "figures").iterdir()) == [".pdf", ".png"]


def test_a_teacher_without_masks_at_the_filters_is_said(tiny_shards, two_runs, tmp_path):
    result = run_in_process("eval", "--shards", tiny_shards, "--student", two_runs[0], "--mode", "everything", "--grid", "2",
                     "--pred-iou-thresh", "2", "--limit", "1", "--device", "cpu", "--no-progress",
                     "--out", tmp_path / "everything")
    assert result.returncode == 0, result.stderr
    assert "warning: the teacher gave no masks at these filters; lower --pred-iou-thresh" in result.stderr
