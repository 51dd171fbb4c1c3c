"""Hostile input, class by class (issue 13), through the CLI run in process (fast): every fault is one line and exit code 2, nothing escapes the
output folder, one writer per folder, and what was already written survives.

Faults of precompute's inputs (bad samples and annotations) are tried in test_precompute.py,
test_sa1b.py and test_image_inputs.py; run-folder leftovers and resume in test_engine.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import run_in_process as run_cli
from test_precompute import assert_one_line_error

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock

TRAIN = ["--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "1", "--workers", "0", "--no-progress",
         "--device", "cpu"]


def write_samples(path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)


def sample(key: str, embedding=None, jpeg: bytes | None = None) -> dict:
    embedding = np.zeros((256, 16, 16), np.float32) if embedding is None else embedding
    image = shards.encode_image(np.zeros((256, 200, 3), np.uint8)) if jpeg is None else jpeg
    return {"__key__": key, shards.IMAGE_FIELD: image, shards.EMBEDDING_FIELD: shards.npy_bytes(embedding),
            shards.META_FIELD: b'{"key": "x"}'}


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
        result = run_cli("train", "--shards", tiny_shards, *TRAIN, "--out", out)
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
    result = run_cli("train", "--shards", folder, *TRAIN, "--out", tmp_path / "run")
    assert_one_line_error(result, message)


def test_a_truncated_shard_and_a_malformed_manifest_are_one_line(tiny_shards, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    data = sorted(tiny_shards.glob("shard-*.tar"))[0].read_bytes()
    (folder / "shard-000000.tar").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("train", "--shards", folder, *TRAIN, "--out", tmp_path / "a"), "shard")
    broken = tmp_path / "manifest"
    broken.mkdir()
    (broken / "shard-000000.tar").write_bytes(sorted(tiny_shards.glob("shard-*.tar"))[0].read_bytes())
    for text in ("{not json", "[1, 2]", '{"a": ' * 5000 + "1" + "}" * 5000):
        (broken / "manifest.json").write_text(text)
        assert_one_line_error(run_cli("train", "--shards", broken, *TRAIN, "--out", tmp_path / "b"), "manifest")


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
    assert_one_line_error(run_cli("train", "--shards", tiny_shards, *TRAIN, option, value, "--out", out), message)
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["train", "--shards", "SHARDS", *TRAIN],
    ["eval", "--shards", "SHARDS", "--student", "RUN", "--grid", "2", "--device", "cpu", "--no-progress"],
])
def test_out_that_is_a_file(tiny_shards, two_runs, tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    command = [str(tiny_shards) if a == "SHARDS" else str(two_runs[0]) if a == "RUN" else a for a in command]
    assert_one_line_error(run_cli(*command, "--out", blocker), "is not a folder")
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_points_per_batch(tiny_shards, two_runs, tmp_path, value):
    result = run_cli("eval", "--shards", tiny_shards, "--student", two_runs[0], "--points-per-batch", value,
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
    result = run_cli("train", "--shards", tiny_shards, *TRAIN, "--init", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "checkpoint")
    assert not (tmp_path / "run" / "student.pt").exists()


def test_a_second_precompute_or_eval_into_a_busy_folder_is_refused(sample_sa1b, tiny_shards, two_runs, tmp_path):
    busy = tmp_path / "busy"
    with output_lock(busy):
        precompute = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--subset", "all",
                             "--out", busy, "--workers", "0", "--no-progress", "--device", "cpu")
        evaluation = run_cli("eval", "--shards", tiny_shards, "--student", two_runs[0], "--grid", "2",
                             "--out", busy, "--device", "cpu", "--no-progress")
    assert_one_line_error(precompute, "is in use by another srw job")
    assert_one_line_error(evaluation, "is in use by another srw job")
    assert not list(busy.glob("shard-*.tar")) and not (busy / "summary.json").exists()
