"""Masks at the original size kept tile by tile: whole tiles counted, edge tiles as pixels; exact IoUs.

A :class:`TiledMasks` holds, per mask and ``T x T`` tile, its class (0: no pixel, 1: every pixel,
2: some: then its pixels), and the positive count. Two sets' IoUs need pixels only where both are
partial; the counts are integers, so the IoUs equal :func:`~mobilesam_srw.sam.masks.mask_iou` of
the dense masks exactly (a test pins it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mobilesam_srw.eval.sam.upscale import DEFAULT_TILE, UpscaleFrame
from mobilesam_srw.sam.masks import iou_from_counts

EMPTY, FULL, PARTIAL = 0, 1, 2
CHUNK_TILES = 1 << 16  # partial tiles computed at once (memory: T*T*4 bytes x this x a few)
DENSE_CHUNK = 64  # masks upscaled in full at once where no frame calibrates
# above this share of edge tiles the dense upscale is cheaper (real decoders' masks: ~2%; a random one's: ~99%)
SPARSE_MAX_EDGE_SHARE = 0.25


@dataclass
class TiledMasks:
    """Masks ``[M]`` of one original size, by tile.

    Args:
        kind: ``[M, Ty, Tx]`` int8 tile class (EMPTY, FULL, PARTIAL).
        counts: ``[M, Ty, Tx]`` int32 positive pixels per tile.
        index: ``[M, Ty, Tx]`` int64 row of a PARTIAL tile in ``pixels`` (-1 elsewhere).
        pixels: ``[K, T, T]`` bool pixels of the PARTIAL tiles (False outside the image).
    """

    kind: torch.Tensor
    counts: torch.Tensor
    index: torch.Tensor
    pixels: torch.Tensor

    def __len__(self) -> int:
        return len(self.kind)

    def areas(self) -> torch.Tensor:
        """``[M]`` int32 positive pixels per mask."""
        return self.counts.sum((1, 2), dtype=torch.int32)

    def to_dense(self, size: tuple[int, int]) -> torch.Tensor:
        """``[M, H, W]`` bool masks of original ``size`` (for checks; the point of tiles is not to need them)."""
        count, rows, cols = self.kind.shape
        tile = self.pixels.shape[-1]
        blocks = (self.kind == FULL)[:, :, :, None, None].expand(count, rows, cols, tile, tile).clone()
        partial = self.kind == PARTIAL
        blocks[partial] = self.pixels[self.index[partial]]
        return blocks.transpose(2, 3).reshape(count, rows * tile, cols * tile)[:, : size[0], : size[1]]

    def select(self, rows: torch.Tensor) -> "TiledMasks":
        """The masks ``rows`` (their pixels shared, not copied)."""
        return TiledMasks(self.kind[rows], self.counts[rows], self.index[rows], self.pixels)

    @classmethod
    def concat(cls, parts: list["TiledMasks"]) -> "TiledMasks":
        """The masks of ``parts`` in order (of one original size and tile)."""
        if len(parts) == 1:
            return parts[0]
        shifts = torch.tensor([0] + [len(part.pixels) for part in parts[:-1]]).cumsum(0).tolist()
        index = torch.cat([torch.where(part.index >= 0, part.index + shift, -1) for part, shift in zip(parts, shifts)])
        return cls(torch.cat([p.kind for p in parts]), torch.cat([p.counts for p in parts]), index,
                   torch.cat([p.pixels for p in parts]))

    @classmethod
    def _assemble(cls, kind: torch.Tensor, counts: torch.Tensor, pixels: torch.Tensor) -> "TiledMasks":
        partial = kind == PARTIAL
        index = torch.full(kind.shape, -1, dtype=torch.int64, device=kind.device)
        index[partial] = torch.arange(int(partial.sum()), device=kind.device)
        return cls(kind, counts, index, pixels)

    @classmethod
    def from_logits(cls, frame: UpscaleFrame, logits: torch.Tensor, scale: torch.Tensor | None = None,
                    kind: torch.Tensor | None = None) -> "TiledMasks":
        """``postprocess_masks(logits) > 0`` by tile, without the dense masks.

        Args:
            frame: the calibrated frame of these logits.
            logits: ``[M, h, w]`` low-res logits, finite where the frame reads them.
            scale: ``[M]`` each mask's largest ``|logit|`` there (see :meth:`MaskTiler.__call__`).
            kind: ``frame.footprint_signs(logits)`` when already known.
        """
        logits = logits.float().contiguous()
        if scale is None:
            rows, cols = frame.read_size
            scale = logits[:, :rows, :cols].abs().amax((1, 2))
        if kind is None:
            kind = frame.footprint_signs(logits)
        counts = torch.where(kind == FULL, frame.tile_area().to(kind.device), 0).int()
        masks, tile_rows, tile_cols = (kind == PARTIAL).nonzero(as_tuple=True)
        parts = [frame.tile_positive(logits, masks[start : start + CHUNK_TILES], tile_rows[start : start + CHUNK_TILES],
                                     tile_cols[start : start + CHUNK_TILES], scale)
                 for start in range(0, len(masks), CHUNK_TILES)]
        tile = frame.tile
        pixels = (parts[0] if len(parts) == 1 else torch.cat(parts)) if parts else \
            torch.zeros(0, tile, tile, dtype=torch.bool, device=logits.device)
        counts[masks, tile_rows, tile_cols] = pixels.view(len(pixels), -1).sum(1, dtype=torch.int32)
        return cls._assemble(kind, counts, pixels)

    @classmethod
    def from_dense(cls, masks: torch.Tensor, tile: int) -> "TiledMasks":
        """Dense bool masks ``[M, H, W]`` by tile (ground truth, or masks upscaled densely)."""
        count, height, width = masks.shape
        rows, cols = -(-height // tile), -(-width // tile)
        padded = F.pad(masks.to(torch.uint8), (0, cols * tile - width, 0, rows * tile - height))
        blocks = padded.view(count, rows, tile, cols, tile).transpose(2, 3)  # [M, Ty, Tx, T, T]
        counts = blocks.sum((3, 4), dtype=torch.int32)
        area = torch.zeros(rows * tile, cols * tile, dtype=torch.int32, device=masks.device)
        area[:height, :width] = 1
        area = area.view(rows, tile, cols, tile).sum((1, 3))
        kind = torch.where(counts == 0, EMPTY, torch.where(counts == area, FULL, PARTIAL)).to(torch.int8)
        return cls._assemble(kind, counts, blocks[kind == PARTIAL].bool())


def paired_iou(first: TiledMasks, second: TiledMasks) -> torch.Tensor:
    """IoU of ``first[i]`` and ``second[i]`` -> ``[M]``, equal to ``mask_iou`` of the dense masks."""
    if len(first) != len(second):
        raise ValueError(f"paired_iou: {len(first)} masks against {len(second)}")
    whole = torch.where(first.kind == FULL, second.counts, torch.where(second.kind == FULL, first.counts, 0))
    intersection = whole.sum((1, 2), dtype=torch.int32)
    both = (first.kind == PARTIAL) & (second.kind == PARTIAL)
    masks, tile_rows, tile_cols = both.nonzero(as_tuple=True)
    if len(masks):
        shared = (first.pixels[first.index[masks, tile_rows, tile_cols]]
                  & second.pixels[second.index[masks, tile_rows, tile_cols]]).sum((1, 2), dtype=torch.int32)
        intersection = intersection.index_add(0, masks, shared)
    return iou_from_counts(intersection, first.areas(), second.areas())


class MaskTiler:
    """Original-size masks of a decoder's low-res logits, by tile, as ``SamPredictor`` thresholds them.

    The exact sparse upscale (:class:`~mobilesam_srw.eval.sam.upscale.UpscaleFrame`) where a frame
    calibrates against ``model.postprocess_masks`` on this device, with the channels of the decoder call
    (3 masks per prompt, or 1) and this thread count (ATen's kernel depends on both); else (or with
    ``dense``, or for non-finite logits, or when more than :data:`SPARSE_MAX_EDGE_SHARE` of the tiles lie on
    an edge, as a random decoder's noisy masks do) ``postprocess_masks`` in full, then tiled: the same masks
    either way. Frames are kept per size.

    Args:
        model: the ``Sam`` whose ``postprocess_masks`` and ``mask_threshold`` the masks follow.
        tile: tile side in output pixels.
        dense: always upscale in full.
    """

    def __init__(self, model, tile: int = DEFAULT_TILE, dense: bool = False) -> None:
        self.model, self.tile, self.dense = model, tile, dense
        self._frames: dict[tuple, UpscaleFrame | None] = {}

    def frame(self, low_size: tuple[int, int], input_size: tuple[int, int], original_size: tuple[int, int],
              device: torch.device, channels: int = 3) -> UpscaleFrame | None:
        """The calibrated frame of these sizes and channels, or None (then masks are upscaled in full)."""
        key = (tuple(low_size), tuple(input_size), tuple(original_size), str(device), channels,
               torch.get_num_threads() == 1)
        if key not in self._frames:
            frame = None
            if not self.dense and self.model.mask_threshold == 0:
                frame = UpscaleFrame.calibrated(self.model.postprocess_masks, low_size,
                                                self.model.image_encoder.img_size, input_size, original_size,
                                                self.tile, device, channels)
                if frame is None:
                    warnings.warn(f"eval: this device's bilinear kernel ({device}) was not reproduced bit for bit; "
                                  f"masks of {original_size[0]} x {original_size[1]} images are upscaled in full "
                                  "(slow)", stacklevel=2)
            self._frames[key] = frame
        return self._frames[key]

    def __call__(self, logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
                 channels: int) -> TiledMasks:
        """``[..., h, w]`` low-res logits -> the masks ``postprocess_masks(...) > mask_threshold``, flattened.

        Args:
            channels: masks per prompt of the decoder call that gave them (3 with ``multimask_output``,
                else 1), also when only some of them are passed.
        """
        flat = logits.reshape(-1, *logits.shape[-2:]).float().contiguous()
        frame = self.frame(flat.shape[-2:], input_size, original_size, flat.device, channels)
        if frame is not None:
            rows, cols = frame.read_size
            scale = flat[:, :rows, :cols].abs().amax((1, 2))  # NaN or inf where read: ATen's own arithmetic
            if bool(torch.isfinite(scale).all()):
                kind = frame.footprint_signs(flat)
                if (kind == PARTIAL).float().mean().item() <= SPARSE_MAX_EDGE_SHARE:  # else: mostly edges
                    return TiledMasks.from_logits(frame, flat, scale, kind)
        parts = []
        if logits.dim() >= 3 and logits.shape[-3] == channels:  # whole calls: upscaled as they are
            calls = flat.view(-1, channels, *flat.shape[-2:])
            for start in range(0, len(calls), max(1, DENSE_CHUNK // channels)):
                masks = self.model.postprocess_masks(calls[start : start + max(1, DENSE_CHUNK // channels)],
                                                     input_size, original_size).flatten(0, 1)
                parts.append(TiledMasks.from_dense(masks > self.model.mask_threshold, self.tile))
            return TiledMasks.concat(parts)
        for start in range(0, len(flat), DENSE_CHUNK):  # some masks of calls: each in a call of its channels
            part = flat[start : start + DENSE_CHUNK]
            chunk = part.new_zeros(len(part), channels, *part.shape[1:])  # the call's channels: ATen's kernel
            chunk[:, 0] = part
            masks = self.model.postprocess_masks(chunk, input_size, original_size)[:, 0]
            parts.append(TiledMasks.from_dense(masks > self.model.mask_threshold, self.tile))
        return TiledMasks.concat(parts)
