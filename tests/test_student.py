"""Students: shapes, timm backbones, and MobileSAM's reference TinyViT on the same weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.mobilesam_format import from_mobilesam, load_mobilesam_into, to_mobilesam
from mobilesam_srw.sam.student import build_student


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every parameter and BatchNorm statistic, so equal outputs mean equal weights were used."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in module.named_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for name, buffer in module.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("name,size", [("tinyvit-5m", 256), ("tinyvit-micro", 256), ("tinyvit-micro", 512)])
def test_tinyvit_output_shape(name, size):
    student = build_student(name, size).eval()
    with torch.no_grad():
        out = student(torch.randn(2, 3, size, size))
    assert out.shape == (2, 256, size // 16, size // 16) == (2, *student.embedding_shape)


def test_tinyvit_5m_has_mobilesam_size():
    student = build_student("tinyvit-5m", 1024)
    parameters = sum(p.numel() for p in student.parameters())
    assert 5.5e6 < parameters < 5.9e6  # MobileSAM's encoder: 5.78M with its unused 321k classifier


def test_timm_backbone_student():
    student = build_student("timm:resnet18", 256).eval()
    with torch.no_grad():
        assert student(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)


@pytest.mark.parametrize("name,size", [("nope", 256), ("timm:no_such_model", 256), ("tinyvit-5m", 250)])
def test_bad_student(name, size):
    with pytest.raises(SrwError):
        build_student(name, size)


def test_mobilesam_keys_round_trip():
    student = build_student("tinyvit-micro", 256)
    exported = to_mobilesam(student)
    assert all(key.startswith("image_encoder.") for key in exported)
    assert "image_encoder.layers.0.downsample.conv2.c.weight" in exported
    assert "image_encoder.patch_embed.seq.2.bn.running_var" in exported
    back = from_mobilesam(exported)
    assert back.keys() == student.state_dict().keys()
    other = build_student("tinyvit-micro", 256)
    load_mobilesam_into(other, exported)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), student.state_dict().values()))
    with pytest.raises(SrwError, match="do not fit"):
        load_mobilesam_into(build_student("tinyvit-5m", 256), exported)


REFERENCE = textwrap.dedent(
    """
    import sys, torch
    from mobile_sam import sam_model_registry  # MobileSAM's own tiny_vit_sam.py
    folder = sys.argv[1]
    ours = torch.load(folder + "/ours.pt", weights_only=True)
    x = torch.load(folder + "/x.pt", weights_only=True)
    # MobileSAM's TinyViT caches attention biases in .eval(): call it after loading, as its README does.
    reference = sam_model_registry["vit_t"]()
    encoder_keys = {k for k in reference.state_dict() if k.startswith("image_encoder.")}
    assert set(ours) == encoder_keys, sorted(set(ours) ^ encoder_keys)[:4]
    reference.load_state_dict(ours, strict=False)
    reference.eval()
    with torch.no_grad():
        from_ours = reference.image_encoder(x)
    torch.manual_seed(1)
    theirs = sam_model_registry["vit_t"]()
    with torch.no_grad():
        for p in theirs.image_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        theirs.eval()
        from_theirs = theirs.image_encoder(x)
    torch.save({"from_ours": from_ours, "theirs_state": theirs.state_dict(), "from_theirs": from_theirs},
               folder + "/reference.pt")
    """
)


@pytest.mark.slow
def test_same_weights_give_mobilesam_embedding(tmp_path):
    torch.manual_seed(0)
    student = build_student("tinyvit-5m", 1024).eval()
    randomize(student)
    x = torch.randn(1, 3, 1024, 1024)
    torch.save(to_mobilesam(student), tmp_path / "ours.pt")
    torch.save(x, tmp_path / "x.pt")
    result = subprocess.run([sys.executable, "-c", REFERENCE, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    with torch.no_grad():
        ours = student(x)
    torch.testing.assert_close(ours, reference["from_ours"], atol=1e-4, rtol=0)
    imported = build_student("tinyvit-5m", 1024).eval()
    load_mobilesam_into(imported, reference["theirs_state"])
    with torch.no_grad():
        torch.testing.assert_close(imported(x), reference["from_theirs"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- output strides (a teacher's grid from any input size)


@pytest.mark.parametrize("name", ["tinyvit-micro", "timm:resnet18"])
@pytest.mark.parametrize("stride", [4, 8])
def test_output_stride(name, stride):
    """A stride-s student gives an S/s grid from its own features, neither pooled nor upsampled."""
    student = build_student(name, 128, stride).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        features = student.backbone(x)
        out = student(x)
    assert out.shape == (2, 256, 128 // stride, 128 // stride) == (2, *student.embedding_shape)
    assert features.shape[-2:] == (128 // stride, 128 // stride) and student.grid == 128 // stride
    if name.startswith("timm:"):  # resnet18: layer at the stride (64 or 128 ch) + layer3 (256 ch, stride 16) upsampled
        assert features.shape[1] == {4: 64, 8: 128}[stride] + 256


def test_stride_and_size_errors():
    from mobilesam_srw.sam.student import student_stride

    assert student_stride(256, 64) == 4 and student_stride(1024, 64) == 16
    with pytest.raises(SrwError, match="not a multiple of 60"):
        student_stride(256, 60)
    with pytest.raises(SrwError, match="output stride 4, 8, 16, not 2"):
        build_student("tinyvit-micro", 256, 2)
    with pytest.raises(SrwError, match="multiple of its stride 16"):
        build_student("tinyvit-micro", 100)


def test_student_file_keeps_its_stride(tmp_path):
    from mobilesam_srw.sam import checkpoint

    torch.manual_seed(0)
    student = build_student("tinyvit-micro", 128, 4).eval()
    checkpoint.save(tmp_path / "student.pt", checkpoint.student_record(student))
    loaded, record = checkpoint.load_student(tmp_path / "student.pt")
    assert record["stride"] == loaded.stride == 4 and loaded.embedding_shape == (256, 32, 32)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), student(x))
    old = checkpoint.student_record(build_student("tinyvit-micro", 128))
    del old["stride"]  # a student file written before strides: SAM's 16
    checkpoint.save(tmp_path / "old.pt", old)
    assert checkpoint.load_student(tmp_path / "old.pt")[0].stride == 16


def test_match_output_statistics_sets_the_output_scale():
    from mobilesam_srw.sam.student import match_output_statistics

    student = build_student("tinyvit-micro", 64, 4).eval()
    mean, std = torch.linspace(-0.5, 0.5, 256), torch.full((256,), 0.1)
    match_output_statistics(student, mean, std)
    with torch.no_grad():
        out = student(torch.randn(1, 3, 64, 64))
    centred = out - mean.view(1, 256, 1, 1)
    # LayerNorm2d gives unit variance over the channels at each position: scaled by std, shifted by mean
    torch.testing.assert_close(centred.std(dim=1, unbiased=False), torch.full((1, 16, 16), 0.1), atol=1e-3, rtol=0)
    torch.testing.assert_close(centred.mean(dim=1), torch.zeros(1, 16, 16), atol=1e-5, rtol=0)
