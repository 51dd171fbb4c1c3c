"""Hardening, second pass (issue 25), class by class: nothing is written outside an output folder even with
planted links, launch scripts cannot be injected, COCO images stay inside --image-root, the CIFAR unpickler
allocates nothing the format does not hold; nothing the user wrote is deleted or overwritten, resumes refuse
other data, a killed precompute's workers free its folder, partial shards are refused, one file is one
sample, a classification resume with augmentation is bit-identical; full disks, FIFOs, huge sizes, tiny
temperatures and malformed labels or weights are one line.

Each test fails without its fix (checked once by switching the fix off).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesam_srw import shards
from mobilesam_srw.atomic import atomic_path, read_json, write_json
from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.train import train as train_cls
from mobilesam_srw.data_prep import writer
from mobilesam_srw.data_prep.sam import coco, image_folder
from mobilesam_srw.data_prep.sources import SourceOptions
from mobilesam_srw.engine import checkpoint, fit
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import LOCK_FILE, is_locked, output_lock

from conftest import assert_one_line_error, precompute_tiny, run_in_process
from engine_toy import ToyConfig, ToyTask

TRAIN = ["--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "1", "--workers", "0", "--no-progress",
         "--device", "cpu"]


def photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, (*size[::-1], 3), np.uint8)).save(path)
    return path


def toy(out: Path, **overrides) -> ToyConfig:
    values = dict(out=out, batch_size=4, epochs=1, workers=0, progress=False, device="cpu", optimizer="sgd", lr=0.1,
                  momentum=0.0, weight_decay=0.0, schedule="step", warmup=0, save_every=1000)
    return ToyConfig(**{**values, **overrides})


# --- security: links planted in an output folder are never followed -------------------------------------------

def test_a_planted_lock_link_is_refused_and_the_target_untouched(tmp_path):
    out, target = tmp_path / "out", tmp_path / "elsewhere.txt"
    out.mkdir()
    target.write_text("precious")
    (out / LOCK_FILE).symlink_to(target)
    with pytest.raises(SrwError, match="is a link"):
        with output_lock(out):
            pass
    assert target.read_text() == "precious"
    os.unlink(out / LOCK_FILE)
    os.link(target, out / LOCK_FILE)  # a hard link: the same file under our name
    with pytest.raises(SrwError, match="hard link"):
        with output_lock(out):
            pass
    assert target.read_text() == "precious"


def test_the_lock_file_goes_with_the_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        assert (out / LOCK_FILE).is_file() and is_locked(out) == f"pid {os.getpid()}"
    assert not (out / LOCK_FILE).exists() and is_locked(out) is None
    with pytest.raises(RuntimeError), output_lock(out):
        raise RuntimeError("the job failed")
    assert list(out.iterdir()) == []  # no lock left behind after a failure either


def test_temporary_names_are_unpredictable_and_never_followed(tmp_path):
    out, target = tmp_path / "out", tmp_path / "elsewhere.json"
    out.mkdir()
    target.write_text("precious")
    for guess in (f".record.json.tmp{os.getpid()}", ".record.json.tmp"):  # the old name, and its stem
        (out / guess).symlink_to(target)
    write_json(out / "record.json", {"a": 1})
    assert target.read_text() == "precious" and read_json(out / "record.json") == {"a": 1}
    names = set()
    for _ in range(2):
        with atomic_path(out / "x.bin") as temporary:
            names.add(temporary.name)
            assert temporary.is_file() and not temporary.is_symlink()
    assert len(names) == 2  # a fresh, unguessable name each time
    (out / "final.json").symlink_to(target)  # a link at the final name is replaced, not written through
    write_json(out / "final.json", [1])
    assert target.read_text() == "precious" and not (out / "final.json").is_symlink()


def test_a_linked_parts_folder_is_refused(sample_sa1b, tmp_path):
    out, elsewhere = tmp_path / "shards", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / writer.PARTS_DIR).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SrwError, match="is a link"):
        precompute_tiny(sample_sa1b, out)
    assert list(elsewhere.iterdir()) == []
    assert not (out / LOCK_FILE).exists()


@pytest.mark.parametrize("planted", ["checkpoints", "tensorboard", "metrics.jsonl"])
def test_linked_run_files_are_refused(tmp_path, planted):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / planted).symlink_to(elsewhere if "." not in planted else elsewhere / "log.jsonl")
    with pytest.raises(SrwError, match="is a link"):
        fit(ToyTask(toy(out)))
    assert list(elsewhere.iterdir()) == []


# --- security: launch scripts cannot be injected ----------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("data", "cifar\ntouch /tmp/pwned"), ("teacher_dir", "t\rx"),
                                          ("out", "runs\x1b[2J")])
def test_control_characters_never_reach_a_launch_script(tmp_path, field, value):
    from mobilesam_srw.cls.sweep import Sweep, write_sweep

    values = dict(data=tmp_path / "data", pairs=["resnet32x4:resnet8x4"], teacher_dir=tmp_path / "teachers",
                  out=tmp_path / "runs")
    sweep = Sweep(**{**values, field: tmp_path / value})
    with pytest.raises(SrwError, match="control character"):
        write_sweep(sweep, tmp_path / "scripts")
    assert not (tmp_path / "scripts").exists()
    extra = Sweep(**values, extra=["--lr", "0.1\nrm -rf ~"])
    with pytest.raises(SrwError, match="control character"):
        write_sweep(extra, tmp_path / "scripts")
    with pytest.raises(SrwError, match="--script-dir holds a control character"):
        write_sweep(Sweep(**values), tmp_path / "scripts\n")
    write_sweep(Sweep(**{**values, "data": tmp_path / "a b'$(x)"}), tmp_path / "scripts")  # quoted, one line each
    lines = (tmp_path / "scripts" / "commands.txt").read_text().splitlines()
    assert len(lines) == len(Sweep(**values).runs())


# --- security: COCO images stay inside --image-root --------------------------------------------------------------

def test_coco_images_cannot_leave_the_root_through_links(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    photo(root / "inside.jpg")
    photo(outside / "secret.jpg")
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "ok_link.jpg").symlink_to(root / "inside.jpg")  # a link that stays inside: the same file, once
    images = [{"id": i, "file_name": name} for i, name in enumerate(
        ["inside.jpg", "leak.jpg", "linked/secret.jpg", "ok_link.jpg"])]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": []}))
    found = coco.discover([path], SourceOptions(image_root=root))
    assert [unit.name for unit in found.units] == ["inside"]
    reasons = {skip.key: skip.reason for skip in found.skipped}
    assert "leaves the image root" in reasons["leak.jpg"] and "leaves the image root" in reasons["linked/secret.jpg"]
    assert "same file" in reasons["ok_link.jpg"]


# --- security: the CIFAR unpickler allocates only what the format holds ----------------------------------------

class _Allocate:
    """89 bytes of pickle that ask numpy for 200,000 images (615 MB)."""

    def __reduce__(self):
        return np.ndarray, ((200_000, 3072), "u1")


class _Reconstruct:
    def __reduce__(self):
        return np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (200_000, 3072), b"b")


@pytest.mark.parametrize("payload", [_Allocate(), _Reconstruct()])
def test_a_cifar_pickle_cannot_allocate_arrays(tmp_path, payload):
    from mobilesam_srw.cls.data.cifar import unpickle_cifar

    data = pickle.dumps({"data": payload, "labels": [0]}, protocol=4)
    tracemalloc.start()
    try:
        with pytest.raises(SrwError, match="refused to unpickle"):
            unpickle_cifar(data, "data_batch_1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def _cifar10_binary(root: Path, labels_per_file: list[list[int]]) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, labels in zip(names, labels_per_file):
        pixels = np.random.default_rng(len(labels)).integers(0, 255, (len(labels), 3072), np.uint8)
        records = np.concatenate([np.array(labels, np.uint8)[:, None], pixels], 1)
        (folder / name).write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    return root


def test_cifar_counts_are_checked_against_the_published_files(tmp_path, monkeypatch):
    from mobilesam_srw.cls.data import cifar

    root = _cifar10_binary(tmp_path, [[1, 2, 3]] * 6)
    assert len(cifar.read_cifar(root, "cifar10").train.labels) == 15
    monkeypatch.setattr(cifar, "PUBLISHED_IMAGES", {**cifar.PUBLISHED_IMAGES, "data_batch_1.bin": 2})
    with pytest.raises(SrwError, match="3 images, more than the published file's 2"):
        cifar.read_cifar(root, "cifar10")


@pytest.mark.parametrize("labels", [[1.7, 2.0], ["3", "4"], [True, False]])
def test_cifar_labels_that_are_not_integers_are_refused(tmp_path, labels):
    from mobilesam_srw.cls.data.cifar import CifarLayout, _python_split

    layout = CifarLayout("f", "f.tar.gz", "python", ("train",), (), "meta", "labels")
    data = {"train": pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": labels}, protocol=4)}
    with pytest.raises(SrwError, match="is not a list of integers"):
        _python_split(layout, data, ("train",), 10, "here")


# --- data loss: never delete or overwrite what we did not write -------------------------------------------------

def test_clip_export_into_an_earlier_export_keeps_the_users_files(tmp_path):
    pytest.importorskip("open_clip")
    from mobilesam_srw.clip import export, student, teacher

    clip_teacher = teacher.build_clip_teacher("ViT-S-32", seed=0)
    module = student.build_clip_student("timm:test_vit", clip_teacher.identity.embed_dim,
                                        clip_teacher.identity.image_size)
    out = export.export_distilled_clip(module, clip_teacher, "timm:test_vit", tmp_path / "export")
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    export.export_distilled_clip(module, clip_teacher, "timm:test_vit", out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", export.CONFIG_FILE, export.WEIGHTS_FILE, "plots"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging or old copies beside it
    export.load_distilled_clip(out)


def test_sam_export_refuses_an_output_that_is_an_input(two_runs, tmp_path):
    from mobilesam_srw.sam.export import export_mobilesam

    run = two_runs[0]
    student = run / checkpoint.STUDENT_FILE
    before = student.read_bytes()
    with pytest.raises(SrwError, match="is one of the inputs"):  # pt (the CLI first refuses a non-vit_t student)
        export_mobilesam(run, student, student)
    result = run_in_process("export", "--run", run, "--format", "onnx", "--out", student)
    assert_one_line_error(result, "is one of the inputs")
    assert student.read_bytes() == before


@pytest.mark.parametrize("inside", [".", "shards", "a/b"])
def test_precompute_out_inside_an_input_is_refused(sample_sa1b, tmp_path, inside):
    data = tmp_path / "data"
    shutil.copytree(sample_sa1b, data)
    listed = sorted(p.name for p in data.rglob("*"))
    with pytest.raises(SrwError, match="is inside the input"):
        precompute_tiny(data, data / inside)
    with pytest.raises(SrwError, match="is the folder of the input"):
        precompute_tiny(sorted(data.glob("*.tar")), data)
    assert sorted(p.name for p in data.rglob("*")) == listed


# --- integrity: a resume refuses other data ----------------------------------------------------------------------

def test_a_sam_resume_on_other_shards_is_refused(tiny_shards, tmp_path):
    out = tmp_path / "run"
    first = run_in_process("train", "--shards", tiny_shards, *TRAIN, "--max-steps", "1", "--out", out)
    assert first.returncode == 0, first.stderr
    result = run_in_process("train", "--shards", tiny_shards / "shard-000000.tar", *TRAIN, "--resume", "--out", out)
    assert_one_line_error(result, "--resume: the run was started with --shards")


def test_a_cls_resume_on_other_data_or_teacher_is_refused(tmp_path):
    from mobilesam_srw.cls import models

    for name, labels in (("a", [1, 2, 3, 4]), ("b", [4, 3, 2, 1])):
        _cifar10_binary(tmp_path / name, [labels * 4] * 6)
    common = dict(dataset="cifar10", student="resnet8", batch_size=8, epochs=1, workers=0, progress=False,
                  device="cpu", augment=False)
    train_cls(ClsTrainConfig(out=tmp_path / "run", data=tmp_path / "a", max_steps=1, **common))
    with pytest.raises(SrwError, match="the run was started with --data .*a \\(fingerprint"):
        train_cls(ClsTrainConfig(out=tmp_path / "run", data=tmp_path / "b", resume=True, **common))
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        teachers.append(tmp_path / f"teacher{seed}.pt")
        checkpoint.save(teachers[-1], {"model": models.create("resnet8", 10, "cifar").state_dict()})
    distil = dict(common, teacher="resnet8", method="kd", data=tmp_path / "a")
    train_cls(ClsTrainConfig(out=tmp_path / "kd", teacher_checkpoint=teachers[0], max_steps=1, **distil))
    with pytest.raises(SrwError, match="the run was started with --teacher-checkpoint"):
        train_cls(ClsTrainConfig(out=tmp_path / "kd", teacher_checkpoint=teachers[1], resume=True, **distil))
    shutil.copy(teachers[0], tmp_path / "moved.pt")  # the same file elsewhere: its content is what counts
    train_cls(ClsTrainConfig(out=tmp_path / "kd", teacher_checkpoint=tmp_path / "moved.pt", resume=True, **distil))


# --- integrity: a killed precompute's loader workers do not keep its folder ------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_kill_9_of_a_precompute_leaves_its_folder_free(tmp_path):
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b

    data, out = tmp_path / "data", tmp_path / "shards"
    write_sample_sa1b(data, num_images=40, images_per_tar=40, seed=0, max_side=512)
    job = subprocess.Popen([sys.executable, "-m", "mobilesam_srw", "precompute", "--sa1b", data, "--out", out,
                            "--teacher", "tiny", "--subset", "all", "--workers", "1", "--batch-size", "1",
                            "--shard-size", "4", "--no-progress", "--device", "cpu"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not (out / "shard-000000.tar").exists() and time.monotonic() < deadline and job.poll() is None:
            workers = _children(job.pid) or workers
            time.sleep(0.2)
        workers = _children(job.pid) or workers
        assert workers and job.poll() is None, "the precompute ended before it could be killed"
        job.send_signal(signal.SIGKILL)
        job.wait()
        time.sleep(2)
        with output_lock(out):  # free now: no orphaned worker holds it
            pass
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if job.poll() is None:
            job.kill()


# --- integrity: shards a precompute is still writing are refused -----------------------------------------------

def test_training_on_an_unfinished_precompute_is_refused(tiny_shards, tmp_path):
    busy = tmp_path / "busy"
    shutil.copytree(tiny_shards, busy)
    with output_lock(busy):
        result = run_in_process("train", "--shards", busy, *TRAIN, "--out", tmp_path / "run1")
    assert_one_line_error(result, "is being written by a precompute")
    (busy / shards.MANIFEST_NAME).unlink()  # killed before its manifest
    result = run_in_process("train", "--shards", busy, *TRAIN, "--out", tmp_path / "run2")
    assert_one_line_error(result, "holds an unfinished precompute")
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()
    result = run_in_process("train", "--shards", busy, *TRAIN, "--max-steps", "1", "--partial-shards",
                            "--out", tmp_path / "run3")
    assert result.returncode == 0, result.stderr


# --- integrity: one file is one sample ---------------------------------------------------------------------------

def test_one_coco_file_under_several_spellings_is_one_sample(tmp_path):
    root = tmp_path / "root"
    photo(root / "a.jpg")
    photo(root / "sub" / "b.jpg")
    names = ["a.jpg", "./a.jpg", "a.jpg/", "sub//b.jpg", "sub/./b.jpg"]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [{"id": i, "file_name": n} for i, n in enumerate(names)]}))
    found = coco.discover([path], SourceOptions(image_root=root))
    assert [unit.name for unit in found.units] == ["a", "sub_b"]
    assert sum("same file" in skip.reason for skip in found.skipped) == 3


def test_an_image_folder_with_a_link_loop_neither_multiplies_nor_mislabels(tmp_path):
    from mobilesam_srw.cls.data.imagenet import imagenet_datasets

    for split in ("train", "val"):
        photo(tmp_path / split / "cat" / "c1.png")
        photo(tmp_path / split / "dog" / "d1.png")
    (tmp_path / "train" / "cat" / "loop").symlink_to(tmp_path / "train" / "cat", target_is_directory=True)
    (tmp_path / "train" / "cat" / "dogs").symlink_to(tmp_path / "train" / "dog", target_is_directory=True)
    (tmp_path / "train" / "cat" / "stolen.png").symlink_to(tmp_path / "train" / "dog" / "d1.png")
    train, _, classes = imagenet_datasets(tmp_path)
    assert classes == 2
    assert sorted((Path(path).name, label) for path, label in train.folder.samples) == [("c1.png", 0), ("d1.png", 1)]


def test_keys_do_not_depend_on_the_order_of_the_inputs(tmp_path):
    for name in ("a/x.png", "a/sub/y.png", "b/x.png"):
        photo(tmp_path / name)
    inputs = [tmp_path / "a", tmp_path / "a" / "sub", tmp_path / "b"]
    found = [image_folder.discover(order) for order in (inputs, inputs[::-1], [inputs[1], inputs[2], inputs[0]])]
    keyed = [sorted((unit.name, unit.source) for unit in discovery.units) for discovery in found]
    assert keyed[0] == keyed[1] == keyed[2]
    assert [unit.name for unit in found[0].units] == [unit.name for unit in found[1].units]


# --- integrity: a classification resume with augmentation is bit-identical ---------------------------------------

@pytest.mark.parametrize("workers", [0, 1])
def test_a_cls_resume_with_augmentation_is_bit_identical(tmp_path, workers):
    common = dict(dataset="digits", student="cnn_digits_student", epochs=2, batch_size=64, workers=workers,
                  device="cpu", progress=False, augment=True)
    train_cls(ClsTrainConfig(out=tmp_path / "whole", **common))
    train_cls(ClsTrainConfig(out=tmp_path / "parts", max_steps=30, **common))  # stops inside epoch 2
    train_cls(ClsTrainConfig(out=tmp_path / "parts", resume=True, **common))
    whole, parts = (checkpoint.load(tmp_path / name / checkpoint.STUDENT_FILE)["model"] for name in ("whole", "parts"))
    assert all(torch.equal(whole[key], parts[key]) for key in whole)


# --- one line instead of a traceback -----------------------------------------------------------------------------

def test_a_failed_torch_save_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    result = run_in_process("train-teacher", "--dataset", "digits", "--student", "cnn_digits_student", "--epochs", "1",
                            "--workers", "0", "--no-progress", "--device", "cpu", "--out", out, program="srw-cls")
    assert_one_line_error(result, "cannot write")
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name == LOCK_FILE]


def _file_size_limit(limit: int):
    def limited() -> None:  # a write past it fails as on a full disk (EFBIG; torch: a short write)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


@pytest.mark.slow
def test_a_full_disk_in_a_real_write_is_one_line(sample_sa1b, tmp_path):
    """precompute's teacher file (torch.save) and a training checkpoint, each past a file-size limit."""
    jobs = [(["-m", "mobilesam_srw", "precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--subset", "all",
              "--workers", "0", "--no-progress", "--device", "cpu", "--out", tmp_path / "shards"], 256 * 1024),
            (["-m", "mobilesam_srw.cls", "train-teacher", "--dataset", "digits", "--student", "cnn_digits_teacher",
              "--epochs", "1", "--workers", "0", "--no-progress", "--device", "cpu", "--out", tmp_path / "run"],
             64 * 1024)]
    for args, limit in jobs:
        result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                                preexec_fn=_file_size_limit(limit))
        assert_one_line_error(result, "cannot write")
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name == LOCK_FILE]


def test_a_coco_fifo_or_device_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "coco.json"
    os.mkfifo(fifo)
    (tmp_path / "root").mkdir()
    outcome: list = []

    def discover(path: Path) -> None:
        try:
            coco.discover([path], SourceOptions(image_root=tmp_path / "root"))
        except SrwError as error:
            outcome.append(str(error))

    for path in (fifo, Path("/dev/zero")):
        worker = threading.Thread(target=discover, args=(path,), daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), f"--coco {path} hangs"
    assert len(outcome) == 2 and all("is not a regular file" in line for line in outcome)


@pytest.mark.parametrize("args, message", [
    (["precompute", "--sa1b", "{data}", "--teacher", "tiny", "--image-size", "1600000"],
     "--image-size must be <= 1024"),
    (["train", "--shards", "{data}", "--tau", "1e-300"], "--tau must be >= 0.0001"),
    (["train", "--shards", "{data}", "--student-size", "1600000"], "--student-size must be <= 1024"),
    (["eval", "--shards", "{data}", "--student", "{data}", "--grid", "100000"], "--grid must be <= 1024"),
])
def test_sizes_and_temperatures_are_bounded_before_any_folder(tmp_path, args, message):
    (tmp_path / "data").mkdir()
    result = run_in_process(*[a.format(data=tmp_path / "data") for a in args], "--out", tmp_path / "out")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_a_teacher_checkpoint_of_integer_tensors_is_refused(tmp_path):
    from mobilesam_srw.cls import models

    model = models.create("cnn_digits_student", 10, "digits")
    path = tmp_path / "ints.pt"
    checkpoint.save(path, {"model": {k: v.to(torch.int64) for k, v in model.state_dict().items()}})
    with pytest.raises(SrwError, match="not floating point"):
        models.load_teacher_checkpoint(model, path)


# --- the demos and the suite under load: no oversubscribed threads ---------------------------------------------

class _Seen(Exception):
    """Stops a demo at its first stage, once the threads it computes with are known."""


def _record_threads(seen: list):
    def stage(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise _Seen

    return stage


@pytest.mark.slow  # it calls the demos (stopped at their first stage, a few seconds)
@pytest.mark.skipif(os.environ.get("OMP_NUM_THREADS") is not None, reason="an explicit OMP_NUM_THREADS is kept")
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread already")
def test_the_demos_compute_with_one_thread(tmp_path, monkeypatch):
    from mobilesam_srw.cls import train as cls_train
    from mobilesam_srw.commands.cls.demo import ClsDemoConfig
    from mobilesam_srw.commands.cls.demo import run_demo as cls_demo
    from mobilesam_srw.commands.sam.demo import DemoConfig
    from mobilesam_srw.commands.sam.demo import run_demo as sam_demo
    from mobilesam_srw.data_prep.sam import sample_data

    threads, seen = torch.get_num_threads(), []
    monkeypatch.setattr(cls_train, "train", _record_threads(seen))
    monkeypatch.setattr(sample_data, "write_sample_sa1b", _record_threads(seen))
    for demo, config in ((cls_demo, ClsDemoConfig(out=tmp_path / "cls")), (sam_demo, DemoConfig(out=tmp_path / "sam"))):
        with pytest.raises(_Seen):
            demo(config)
    assert seen == [1, 1] and torch.get_num_threads() == threads  # one thread inside, restored after


@pytest.mark.skipif(os.environ.get("OMP_NUM_THREADS") is not None, reason="an explicit OMP_NUM_THREADS is kept")
def test_training_threads_leave_the_loader_workers_their_cores(tmp_path):
    from mobilesam_srw.threads import threads_beside, usable_cores

    seen = []

    class Watched(ToyTask):
        def losses(self, model, batch, targets, epoch):
            seen.append(torch.get_num_threads())
            return super().losses(model, batch, targets, epoch)

    fit(Watched(toy(tmp_path / "run", workers=1, max_steps=2)))
    assert set(seen) == {min(torch.get_num_threads(), threads_beside(1))}
    assert threads_beside(1) == max(1, usable_cores() - 1)
