"""A loaded SAM 2.1 teacher: :class:`~mobilesam_srw.sam.teachers.loading.Teacher` on a ``SAM2Base`` whose
targets are ``SAM2ImagePredictor``'s features (:mod:`~mobilesam_srw.sam.teachers.sam2`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mobilesam_srw.sam.teachers.loading import Teacher
from mobilesam_srw.sam.teachers.sam2 import HIGH_RES_MAPS, scripting_quietly


class Sam2Teacher(Teacher):
    """``sam`` is the teacher's ``SAM2Base``; :meth:`targets` are ``SAM2ImagePredictor.set_image_batch``'s
    ``_features`` of the stored images."""

    @torch.no_grad()
    def targets(self, resized_images: Sequence[np.ndarray]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stored images -> ``[B, 256, 64, 64]`` embeddings (``no_mem_embed`` added) and
        ``{high_res_0: [B, 32, 256, 256], high_res_1: [B, 64, 128, 128]}``, float32."""
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        with scripting_quietly():
            predictor = SAM2ImagePredictor(self.sam)
        predictor.set_image_batch([np.ascontiguousarray(image) for image in resized_images])
        features = predictor._features
        maps = {name: feature.float() for (name, _), feature in zip(HIGH_RES_MAPS, features["high_res_feats"])}
        return features["image_embed"].float(), maps

    @torch.no_grad()
    def embed(self, resized_images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.targets(resized_images)[0]

    def embed_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a SAM 2 teacher embeds through SAM2ImagePredictor: use targets()")
