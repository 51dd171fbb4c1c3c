"""Classification models: mdistiller's state-dict layouts, parameter counts, forward, strict loading.

``data/mdistiller_models.json`` was generated once from mdistiller's own model code
(megvii-research/mdistiller a08d46f, ``mdistiller/models/{cifar,imagenet}``), run in a scratch
folder: per model the number of state-dict entries, the parameter count, the sha256 of the
sorted ``key:shape`` listing, and a forward fingerprint: with the deterministic weights and input
of :func:`fill_deterministic` (float64, eval mode, one image: 32 px for CIFAR models, 64 px for
ImageNet models, with mdistiller's 7x7 average pools replaced by the global average pool they
compute at 224 px), the sum and absolute sum of the logits, the pooled feature and every stage
feature. Equal fingerprints mean the same function, not only the same parameter names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from mobilesam_srw.cls.models import (
    CIFAR_MODELS,
    IMAGENET_MODELS,
    create,
    feature_shapes,
    load_teacher_checkpoint,
    stage_channels,
)
from mobilesam_srw.errors import SrwError

GOLDEN = Path(__file__).parent / "data" / "mdistiller_models.json"

# Published parameter counts at 100 classes, in millions (CRD / mdistiller tables).
PUBLISHED_MILLIONS = {
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "ResNet50": 23.71,
    "MobileNetV2": 0.81,
    "ShuffleV1": 0.95,
    "ShuffleV2": 1.35,
}


def layout_listing(model: torch.nn.Module) -> list[str]:
    return sorted(f"{key}:{'x'.join(map(str, value.shape))}" for key, value in model.state_dict().items())


def layout_record(model: torch.nn.Module) -> dict:
    lines = layout_listing(model)
    return {
        "keys": len(lines),
        "params": sum(p.numel() for p in model.parameters()),
        "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
    }


# Length of the pseudo-random pool that weights are cut from: a prime larger than any tensor of
# the registry (2.36 M), so no channel stride aligns with it and no tensor repeats itself.
_POOL = 2_500_009


def _uniform(count: int, offset: int) -> torch.Tensor:
    """``count`` pseudo-random float64 numbers in [0, 1): the fractional part of a scaled sine (no RNG state)."""
    position = torch.arange(offset, offset + count, dtype=torch.float64)
    return torch.frac(torch.sin(position * 12.9898 + 78.233).abs() * 43758.5453)


@functools.lru_cache(maxsize=2)
def _pool(dtype: torch.dtype) -> torch.Tensor:
    return _uniform(_POOL, 0).to(dtype)


@torch.no_grad()
def fill_deterministic(model: torch.nn.Module, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """Weights cut in sorted key order from one pseudo-random pool, so two models of one layout get the
    same values; returns the model in ``dtype`` and eval mode."""
    pool = _pool(dtype)
    offset = 0
    for key, value in sorted(model.to(dtype).state_dict().items()):  # views of the model's tensors
        if key.endswith("num_batches_tracked"):
            continue
        count = value.numel()
        start = offset % (_POOL - count)
        offset += count
        value.copy_(pool[start : start + count].view(value.shape))
        if key.endswith("running_var"):
            value.add_(0.5)
        elif value.ndim >= 2:  # zero mean, variance 1 / fan_in
            scale = math.sqrt(12.0 / value[0].numel())
            value.mul_(scale).sub_(0.5 * scale)
        elif key.endswith(".weight"):
            value.mul_(0.4).add_(0.8)
        else:
            value.sub_(0.5).mul_(0.2)
    return model.eval()


def fingerprint(model: torch.nn.Module, image_size: int, dtype: torch.dtype = torch.float64) -> dict:
    """Shapes and sums of every output on one fixed image, after :func:`fill_deterministic`.

    The golden file holds float64 values; the test computes in float32 (several times faster).
    """
    fill_deterministic(model, dtype=dtype)
    x = (_uniform(3 * image_size * image_size, 7) * 4 - 2).reshape(1, 3, image_size, image_size).to(dtype)
    with torch.no_grad():
        logits, features = model(x)
    outputs = {"logits": logits, "pooled_feat": features["pooled_feat"]}
    for group in ("feats", "preact_feats"):
        for index, feat in enumerate(features.get(group, [])):
            outputs[f"{group}{index}"] = feat
    return {name: [list(t.shape), t.sum().item(), t.abs().sum().item()] for name, t in outputs.items()}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def built():
    """``built(family, name)``: the model at the golden file's class count, built once per module."""
    cache: dict = {}

    def get(family: str, name: str) -> torch.nn.Module:
        if (family, name) not in cache:
            cache[family, name] = create(name, 100 if family == "cifar" else 1000, family)
        return cache[family, name]

    return get


def _cases():
    return [("cifar", name) for name in CIFAR_MODELS] + [("imagenet", name) for name in IMAGENET_MODELS]


@pytest.mark.parametrize("family,name", _cases())
def test_layout_and_forward_match_mdistiller(golden, built, family, name):
    assert golden["num_classes"] == {"cifar": 100, "imagenet": 1000}
    model = built(family, name)
    expected = golden[family][name]
    assert layout_record(model) == expected["layout"], f"{name}: state-dict layout differs from mdistiller's"
    image_size = 32 if family == "cifar" else 64  # both pool globally (see the module docstring)
    ours = fingerprint(model, image_size, dtype=torch.float32)
    reference = expected["forward"]
    if name.startswith("ResNet") and family == "imagenet":
        # torchvision's blocks end in ReLU: these wrap them and give no pre-activation features.
        reference = {key: value for key, value in reference.items() if not key.startswith("preact_feats")}
    assert sorted(ours) == sorted(reference)
    for output, (shape, total, absolute) in reference.items():
        assert ours[output][0] == shape, f"{name} {output}"
        assert ours[output][1] == pytest.approx(total, rel=1e-4, abs=1e-5 * absolute), f"{name} {output}"
        assert ours[output][2] == pytest.approx(absolute, rel=1e-4), f"{name} {output}"


@pytest.mark.parametrize("name,millions", sorted(PUBLISHED_MILLIONS.items()))
def test_parameter_counts_as_published(built, name, millions):
    count = sum(p.numel() for p in built("cifar", name).parameters())
    assert round(count / 1e6, 2) == pytest.approx(millions, abs=0.011)


def test_forward_contract_and_feature_shapes(built):
    model = built("cifar", "resnet8x4").float()
    logits, features = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    assert features["pooled_feat"].shape == (2, 256)
    assert [tuple(f.shape) for f in features["feats"]] == [
        (2, 32, 32, 32),
        (2, 64, 32, 32),
        (2, 128, 16, 16),
        (2, 256, 8, 8),
    ]
    model.train()
    shapes = feature_shapes(model, 32)
    assert model.training  # mode restored
    assert shapes.stages[2] == shapes[2] == (128, 16, 16) and len(shapes) == 4 and shapes.pooled == 256
    assert stage_channels(model, 32) == [32, 64, 128, 256]
    assert stage_channels(built("cifar", "ShuffleV2"), 32) == [24, 116, 232, 464]  # mdistiller's get_stage_channels
    assert stage_channels(built("cifar", "MobileNetV2"), 32) == [16, 12, 16, 48, 160]
    assert feature_shapes(built("imagenet", "MobileNetV1"), 64).stages[-1] == (1024, 2, 2)


def test_create_rejects_unknown_names():
    with pytest.raises(SrwError, match="unknown cifar model 'resnet9'"):
        create("resnet9", 100)
    with pytest.raises(SrwError, match="unknown model family"):
        create("resnet8", 100, family="mnist")
    with pytest.raises(SrwError, match="num_classes"):
        create("resnet8", 0)
    assert create("ResNet18", 10, "imagenet").fc.out_features == 10


def test_strict_checkpoint_loading(tmp_path):
    teacher = create("resnet8", 10)
    reference = {key: torch.randn_like(value.float()).to(value.dtype) for key, value in teacher.state_dict().items()}
    wrapped = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": reference, "epoch": 240, "accuracy": torch.tensor(71.5)}, wrapped)  # RepDistiller's shape
    loaded = load_teacher_checkpoint(create("resnet8", 10), wrapped)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.items())

    plain = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in reference.items()}, plain)  # DataParallel prefix, no wrapper
    assert torch.equal(load_teacher_checkpoint(create("resnet8", 10), plain).fc.bias, reference["fc.bias"])
    torch.save({"state_dict": reference}, plain)
    assert torch.equal(load_teacher_checkpoint(create("resnet8", 10), plain).fc.bias, reference["fc.bias"])

    with pytest.raises(SrwError, match=r"missing keys block1\.layer\.0\.bn1\..*; unexpected keys layer1\.0\.") as error:
        load_teacher_checkpoint(create("wrn_16_1", 10), wrapped)
    assert "\n" not in str(error.value)
    with pytest.raises(SrwError, match=r"fc\.weight has shape \(10, 64\) in the file, \(100, 64\) in the model"):
        load_teacher_checkpoint(create("resnet8", 100), wrapped)
    with pytest.raises(SrwError, match="missing keys layer1.1"):
        load_teacher_checkpoint(create("resnet14", 10), wrapped)
    with pytest.raises(SrwError, match="checkpoint not found"):
        load_teacher_checkpoint(teacher, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SrwError, match="cannot read checkpoint"):
        load_teacher_checkpoint(teacher, tmp_path / "junk.pth")
    torch.save({"epoch": 3}, plain)
    with pytest.raises(SrwError, match="not a state dict"):
        load_teacher_checkpoint(teacher, plain)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": create("resnet8", 10).state_dict(), "extra": Path("x")}, path)  # a pickled class
    with pytest.raises(SrwError, match="cannot read checkpoint"):
        load_teacher_checkpoint(create("resnet8", 10), path)
