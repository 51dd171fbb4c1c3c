"""The CLIP path's parts against open_clip itself, on a random-weight ViT-B-32 teacher."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from open_clip.transform import PreprocessCfg, image_transform_v2  # noqa: E402
from open_clip.zero_shot_classifier import build_zero_shot_classifier as open_clip_classifier  # noqa: E402
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # noqa: E402
from skimage import data as skimage_data  # noqa: E402

from mobilesam_srw.clip import export, student, teacher, zeroshot  # noqa: E402
from mobilesam_srw.data_prep.clip import img2dataset as data  # noqa: E402
from mobilesam_srw.errors import SrwError  # noqa: E402

TEACHER = "ViT-B-32"


@pytest.fixture(scope="module")
def random_teacher() -> teacher.ClipTeacher:
    return teacher.build_clip_teacher(TEACHER, seed=0)


@pytest.fixture(scope="module")
def saved_checkpoint(random_teacher, tmp_path_factory) -> Path:
    return teacher.save_teacher_checkpoint(random_teacher, tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


@pytest.fixture(scope="module")
def saved_teacher(saved_checkpoint) -> teacher.ClipTeacher:
    """The random teacher saved to a file and loaded back as a checkpoint."""
    return teacher.build_clip_teacher(TEACHER, checkpoint=saved_checkpoint)


def _photos() -> list[Image.Image]:
    """Wide, tall, small (upscaled), grayscale, RGBA and palette images."""
    coffee = Image.fromarray(skimage_data.coffee())  # 400 x 600
    return [
        coffee,
        Image.fromarray(np.ascontiguousarray(skimage_data.astronaut()[:, 100:380])),  # 512 x 280, tall
        coffee.resize((90, 60)),
        Image.fromarray(skimage_data.camera()),  # mode L
        Image.fromarray(skimage_data.chelsea()).convert("RGBA"),
        Image.fromarray(skimage_data.chelsea()).convert("P"),
    ]


def _open_clip_preprocess(model: torch.nn.Module):
    """What ``open_clip.create_model_and_transforms`` returns as ``preprocess_val`` for this model."""
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return image_transform_v2(cfg, is_train=False)


def _npy_round_trip(array: np.ndarray) -> np.ndarray:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return np.load(io.BytesIO(stream.getvalue()), allow_pickle=False)


# --- teacher -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"resize_mode": "longest", "fill_color": 7},
        {"resize_mode": "squash", "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3},
        {"size": (160, 192)},
    ],
)
def test_pixels_then_normalisation_equal_open_clip_preprocess(overrides):
    cfg = {**dataclasses.asdict(PreprocessCfg()), **overrides}
    pixel_transform, mean, std = teacher.split_preprocess(cfg)
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    size = cfg["size"] if isinstance(cfg["size"], tuple) else (cfg["size"],) * 2
    for image in _photos():
        pixels = pixel_transform(image)
        assert pixels.dtype == np.uint8 and pixels.shape == (*size, 3)
        ours = teacher.normalize_pixels(teacher.pixels_channels_first(pixels[None], size), mean, std)[0]
        assert torch.equal(ours, reference(image)), image.mode


def test_stored_pixels_give_encode_image_of_open_clip_preprocess(random_teacher):
    model = random_teacher.model
    images = _photos()[:2]
    stored = _npy_round_trip(np.stack([random_teacher.pixels(image) for image in images]))  # what a shard holds
    preprocess = _open_clip_preprocess(model)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(image) for image in images]))
    embedding = teacher.encode_pixels(model, stored)
    assert embedding.dtype == torch.float32 and embedding.shape == (2, random_teacher.identity.embed_dim)
    assert torch.equal(embedding, expected)
    channels_first = torch.from_numpy(stored).permute(0, 3, 1, 2)
    assert torch.equal(teacher.pixels_channels_first(channels_first, (224, 224)), channels_first)
    with pytest.raises(ValueError, match="do not match"):
        teacher.encode_pixels(model, stored[:, :100])


def test_identity_and_saved_teacher(random_teacher, saved_teacher):
    fresh = random_teacher.identity
    assert fresh.is_random and fresh.checkpoint_sha256 is None and "RANDOM" in fresh.describe()
    assert fresh.image_size == (224, 224) and fresh.embed_dim == 512 and fresh.resize_mode == "shortest"
    assert fresh.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN) and fresh.interpolation == "bicubic"
    loaded = saved_teacher.identity
    assert loaded.checkpoint == "teacher.safetensors" and len(loaded.checkpoint_sha256) == 64
    assert loaded.random_seed == 0 and "RANDOM" in loaded.describe()  # still labelled random
    json.dumps(loaded.as_dict())
    pixels = random_teacher.pixels(_photos()[0])[None]
    assert torch.equal(saved_teacher.encode(pixels), random_teacher.encode(pixels))


def test_pretrained_tag_applies_its_quick_gelu(saved_teacher, tmp_path):
    state_dict_file = tmp_path / "open_clip_pytorch_model.bin"  # how open_clip's releases on the Hub are saved
    torch.save(saved_teacher.model.state_dict(), state_dict_file)
    tagged = teacher.build_clip_teacher(TEACHER, checkpoint=state_dict_file, pretrained_tag="openai")
    assert tagged.identity.quick_gelu and tagged.identity.pretrained_tag == "openai"
    pixels = tagged.pixels(_photos()[0])[None]
    assert not torch.allclose(tagged.encode(pixels), saved_teacher.encode(pixels))  # QuickGELU: another model
    with pytest.raises(SrwError, match="no tag 'nope'"):
        teacher.build_clip_teacher(TEACHER, pretrained_tag="nope")


def _quick_gelu_reference(path: Path) -> torch.nn.Module:
    """open_clip's own QuickGELU model of a checkpoint: ``<name>-quickgelu`` loaded from the file."""
    return open_clip.create_model(f"{TEACHER}-quickgelu", pretrained=str(path), pretrained_image=False,
                                  weights_only=True).eval()


def test_openai_weights_are_built_with_quick_gelu(saved_teacher, tmp_path, capsys):
    """OpenAI's CLIP weights need QuickGELU: a checkpoint open_clip tells is such a release (its Hub cache, an
    open_clip_config.json beside it, OpenAI's own state-dict keys) builds <name>-quickgelu's model, with one line
    saying so; other checkpoints keep GELU; a tag saying GELU for such a file is one line."""
    pixels = saved_teacher.pixels(_photos()[0])[None]
    state = saved_teacher.model.state_dict()
    # the Hub's layout: open_clip's ViT-B-32 'openai' tag lives in timm/vit_base_patch32_clip_224.openai
    cached = tmp_path / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    cached.mkdir(parents=True)
    torch.save(state, cached / "open_clip_pytorch_model.bin")
    capsys.readouterr()
    hub = teacher.build_clip_teacher(TEACHER, checkpoint=cached / "open_clip_pytorch_model.bin")
    notes = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(notes) == 1 and "QuickGELU" in notes[0] and "ViT-B-32-quickgelu" in notes[0], notes
    assert hub.identity.quick_gelu and hub.identity.pretrained_tag == "openai"
    reference = _quick_gelu_reference(cached / "open_clip_pytorch_model.bin")
    with torch.no_grad():
        expected = reference.encode_image(teacher.normalize_pixels(
            teacher.pixels_channels_first(pixels, (224, 224)), hub.mean, hub.std))
    assert torch.equal(hub.encode(pixels), expected)
    assert not torch.allclose(hub.encode(pixels), saved_teacher.encode(pixels))  # GELU would be another model
    # a Hub download into a folder of its own, with its open_clip_config.json
    folder = tmp_path / "downloaded"
    folder.mkdir()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    configured = teacher.build_clip_teacher(TEACHER, checkpoint=folder / "open_clip_pytorch_model.bin")
    assert configured.identity.quick_gelu and torch.equal(configured.encode(pixels), expected)
    # OpenAI's own state dict (its TorchScript release's state_dict(), fp16 weights): open_clip's OpenAI loader
    openai_state = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    openai_state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                        vocab_size=torch.tensor(49408))
    torch.save(openai_state, tmp_path / "ViT-B-32.pt")
    own = teacher.build_clip_teacher(TEACHER, checkpoint=tmp_path / "ViT-B-32.pt")
    loader = open_clip.model.build_model_from_openai_state_dict(dict(openai_state), cast_dtype=None).float().eval()
    with torch.no_grad():
        expected = loader.encode_image(teacher.normalize_pixels(
            teacher.pixels_channels_first(pixels, (224, 224)), own.mean, own.std))
    assert own.identity.quick_gelu and own.identity.pretrained_tag == "openai"
    torch.testing.assert_close(own.encode(pixels), expected, atol=1e-5, rtol=0)
    # no evidence: GELU, no note; a GELU tag for an OpenAI file: one line
    plain = tmp_path / "laion" / "open_clip_pytorch_model.bin"
    plain.parent.mkdir()
    torch.save(state, plain)
    capsys.readouterr()
    assert not teacher.build_clip_teacher(TEACHER, checkpoint=plain).identity.quick_gelu
    assert "QuickGELU" not in capsys.readouterr().err
    with pytest.raises(SrwError, match="needs QuickGELU .* --pretrained-tag laion2b_s34b_b79k builds ViT-B-32 with GELU"):
        teacher.build_clip_teacher(TEACHER, checkpoint=tmp_path / "ViT-B-32.pt", pretrained_tag="laion2b_s34b_b79k")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_bad_teachers_are_refused(tmp_path):
    with pytest.raises(SrwError, match="unknown open_clip model"):
        teacher.build_clip_teacher("ViT-Q-99")
    with pytest.raises(SrwError, match="unknown open_clip model"):
        teacher.build_clip_teacher("hf-hub:someone/model")
    with pytest.raises(SrwError, match="checkpoint not found"):
        teacher.build_clip_teacher(TEACHER, checkpoint=tmp_path / "missing.pt")
    scripted = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), scripted)
    with pytest.raises(SrwError, match="TorchScript archive"):
        teacher.build_clip_teacher(TEACHER, checkpoint=scripted)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"not a checkpoint")
    with pytest.raises(SrwError, match="cannot load ViT-B-32"):
        teacher.build_clip_teacher(TEACHER, checkpoint=torn)


# --- zero-shot -----------------------------------------------------------------------------------


def test_metadata_comes_from_open_clip():
    templates = zeroshot.openai_imagenet_templates()
    assert len(templates) == 80 and len(zeroshot.imagenet_classnames()) == 1000
    assert all(t.replace("{}", "tench") == f("tench") for t, f in zip(templates, OPENAI_IMAGENET_TEMPLATES))


def test_classifier_equals_open_clip_builder(random_teacher):
    model, tokenizer = random_teacher.model, random_teacher.tokenizer
    classnames = zeroshot.imagenet_classnames()[:3]
    ours = zeroshot.build_zero_shot_classifier(
        model, tokenizer, classnames, zeroshot.openai_imagenet_templates()[:2], classes_per_batch=2
    )
    theirs = open_clip_classifier(model, tokenizer, classnames, OPENAI_IMAGENET_TEMPLATES[:2], num_classes_per_batch=2)
    assert ours.shape == (512, 3) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_classifier_cache(saved_teacher, random_teacher, tmp_path, monkeypatch):
    classnames, templates = ["cat", "dog"], ["a photo of a {}."]
    built = zeroshot.cached_zero_shot_classifier(saved_teacher, classnames, templates, tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt instead of read from the cache")

    monkeypatch.setattr(zeroshot, "build_zero_shot_classifier", fail)
    assert torch.equal(zeroshot.cached_zero_shot_classifier(saved_teacher, classnames, templates, tmp_path), built)
    with pytest.raises(AssertionError, match="rebuilt"):  # another label set is another key
        zeroshot.cached_zero_shot_classifier(saved_teacher, ["dog", "cat"], templates, tmp_path)
    with pytest.raises(AssertionError, match="rebuilt"):  # a teacher without a checkpoint is never cached
        zeroshot.cached_zero_shot_classifier(random_teacher, classnames, templates, tmp_path)


def test_logits_and_topk():
    classifier = torch.eye(3)  # [D=3, C=3]
    features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.1, 0.2]])
    logits = zeroshot.zero_shot_logits(features, classifier)
    torch.testing.assert_close(logits[0], torch.tensor([100.0, 0.0, 0.0]))
    assert logits[1].argmax() == 2
    assert zeroshot.topk_correct(logits, torch.tensor([0, 1]), ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 2}


def test_classname_and_template_files(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("goldfish\ngreat white shark\n\n")
    assert zeroshot.read_classnames(names) == ["goldfish", "great white shark"]
    names.write_text("goldfish\n\nshark\n")
    with pytest.raises(SrwError, match="blank line 2"):
        zeroshot.read_classnames(names)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na {} and a {}.\n")
    with pytest.raises(SrwError, match="template 2"):
        zeroshot.read_templates(templates)


# --- img2dataset tars ----------------------------------------------------------------------------


def _jpeg(image: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="JPEG", quality=90)
    return stream.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def test_img2dataset_reader_skips_bad_samples(tmp_path):
    photo = _jpeg(skimage_data.coffee()[:64, :96])
    record = json.dumps({"url": "http://example.com/x.jpg", "caption": "coffee", "width": 96}).encode()
    folder = tmp_path / "cc3m"
    folder.mkdir()
    _write_tar(folder / "00000.tar", [
        ("000000000.jpg", photo), ("000000000.txt", b"a cup of coffee"), ("000000000.json", record),
        ("000000001.jpg", b"\xff\xd8 not really a jpeg"), ("000000001.txt", b"corrupt"),
        ("000000002.jpg", photo), ("000000002.json", record),  # no caption
        ("000000003.jpg", photo[: len(photo) // 2]), ("000000003.txt", b"cut short"),
        ("000000004.png", _png(skimage_data.camera()[:32, :32])), ("000000004.txt", b"  a camera man \n"),
        ("bad key.jpg", photo), ("bad key.txt", b"unsafe"),
        ("000000005.jpg", photo), ("000000005.txt", b"   "),
        ("000000006.jpg", photo), ("000000006.txt", b"ok"), ("000000006.json", b"{not json"),
    ])
    (folder / "00000.parquet").write_bytes(b"PAR1")  # img2dataset's side files are ignored
    _write_tar(tmp_path / "00001.tar", [("000001000.jpg", photo), ("000001000.txt", b"kept"),
                                         ("000001001.jpg", photo), ("000001001.txt", b"lost")])
    with tarfile.open(tmp_path / "00001.tar") as archive:
        cut = archive.getmembers()[2].offset_data + 100  # inside 000001001.jpg, before its caption
    (folder / "00001.tar").write_bytes((tmp_path / "00001.tar").read_bytes()[:cut])

    results = list(data.iterate_samples([str(folder / "*.tar")]))
    samples = {r.key: r for r in results if isinstance(r, data.ImageTextSample)}
    skips = {(r.key, r.reason.split(":")[0]) for r in results if not isinstance(r, data.ImageTextSample)}
    assert sorted(samples) == ["000000000", "000000004", "000001000"]
    assert samples["000000000"].caption == "a cup of coffee" and samples["000000000"].record["width"] == 96
    assert samples["000000004"].caption == "a camera man" and samples["000000004"].image.mode == "L"
    assert samples["000000000"].image.size == (96, 64)
    assert ("000000001", "corrupt image") in skips and ("000000003", "corrupt image") in skips
    assert ("000000002", "missing caption (.txt)") in skips and ("000000005", "empty caption") in skips
    assert ("000000006", "malformed json") in skips
    assert any(key == "bad key" and reason.startswith("unsafe key") for key, reason in skips)
    assert any(key == "" and reason.startswith("unreadable tar") for key, reason in skips)
    assert "000001001" in {key for key, _ in skips}
    assert len(results) == 3 + 8  # every sample is yielded or skipped, and the truncated tar is recorded
    assert data.discover_tars([folder]) == data.discover_tars([folder / "00000.tar", str(folder / "0000?.tar")])


def _png(image: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="PNG")
    return stream.getvalue()


def test_reader_input_errors(tmp_path):
    with pytest.raises(SrwError, match="no such file"):
        data.discover_tars([tmp_path / "missing.tar"])
    with pytest.raises(SrwError, match="no input matches"):
        data.discover_tars([str(tmp_path / "*.tar")])
    with pytest.raises(SrwError, match="no .tar files in folder"):
        data.discover_tars([tmp_path])
    assert data.key_problem("000123_a-b") is None and data.key_problem("a" * 129) and data.key_problem("../x")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_tar(tmp_path / "a" / "00000.tar", [])
    _write_tar(tmp_path / "b" / "00000.tar", [])
    with pytest.raises(SrwError, match="share a file name"):
        data.discover_tars([tmp_path / "a", tmp_path / "b"])
    discovery = data.discover([tmp_path / "a"])
    assert [(unit.name, unit.granularity) for unit in discovery.units] == [("00000.tar", "tar")]
    assert discovery.units[0].scan() == ([], [])


# --- student and export --------------------------------------------------------------------------


def test_student_registry_and_errors():
    built = student.build_clip_student("timm:test_vit", embed_dim=32, image_size=64)
    assert built.training and built(torch.zeros(2, 3, 64, 64)).shape == (2, 32)
    assert set(student.CLIP_STUDENTS) == {"tiny_vit_5m_224", "tiny_vit_11m_224", "tiny_vit_21m_224"}
    with pytest.raises(SrwError, match="unknown CLIP student"):
        student.build_clip_student("tiny_vit_99m", 512)
    with pytest.raises(SrwError, match="timm has no model"):
        student.build_clip_student("timm:no_such_net", 512)


def test_export_round_trip_classifies(saved_teacher, tmp_path):
    torch.manual_seed(0)
    distilled = student.build_clip_student(student.DEFAULT_CLIP_STUDENT, 512, 224).eval()
    out = export.export_distilled_clip(distilled, saved_teacher, student.DEFAULT_CLIP_STUDENT, tmp_path / "export",
                                       record={"loss": "srw", "tau": 1.0})
    assert sorted(p.name for p in out.iterdir()) == [export.CONFIG_FILE, export.WEIGHTS_FILE]
    assert export.read_export_record(out)["teacher"]["checkpoint_sha256"] == saved_teacher.identity.checkpoint_sha256

    model = export.load_distilled_clip(out, teacher_name=TEACHER)
    pixels = np.stack([saved_teacher.pixels(image) for image in _photos()[:2]])
    image = teacher.normalize_pixels(
        teacher.pixels_channels_first(pixels, (224, 224)), saved_teacher.mean, saved_teacher.std
    )
    with torch.no_grad():
        student_features = distilled(image)
        torch.testing.assert_close(model.encode_image(image), student_features, rtol=0, atol=1e-6)
    classnames, templates = ["coffee", "cat"], ["a photo of a {}."]
    teacher_classifier = zeroshot.build_zero_shot_classifier(
        saved_teacher.model, saved_teacher.tokenizer, classnames, templates
    )
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    exported_classifier = zeroshot.build_zero_shot_classifier(model, tokenizer, classnames, templates)
    assert torch.equal(exported_classifier, teacher_classifier)  # the teacher's text tower, unchanged
    with torch.no_grad():
        logits = zeroshot.zero_shot_logits(model.encode_image(image), exported_classifier)
    torch.testing.assert_close(logits, zeroshot.zero_shot_logits(student_features, teacher_classifier))

    assert torch.equal(_open_clip_preprocess(model)(_photos()[0]), image[0])  # the teacher's preprocessing

    export.export_distilled_clip(distilled, saved_teacher, student.DEFAULT_CLIP_STUDENT, out)  # replaces an export
    with pytest.raises(SrwError, match="not ViT-B-16"):
        export.load_distilled_clip(out, teacher_name="ViT-B-16")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SrwError, match="not an earlier export"):
        export.export_distilled_clip(distilled, saved_teacher, student.DEFAULT_CLIP_STUDENT, tmp_path / "other")
    (out / export.WEIGHTS_FILE).unlink()
    with pytest.raises(SrwError, match="random weights"):
        export.load_distilled_clip(out)
