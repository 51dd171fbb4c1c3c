"""SAM's mask pixels at the original size, computed only where a mask's edge can be: the exact sparse upscale.

``Sam.postprocess_masks`` resizes a decoder's low-res logits ``[h, w]`` (256 x 256) bilinearly to the
encoder's square input, crops the resized image's part, and resizes that bilinearly to the original
size; ``SamPredictor`` then keeps pixels ``> mask_threshold`` (0). Every output pixel is a convex
combination of at most 2 x 2 values of the stage before, so a pixel is positive only if some low-res
logit of its footprint is, and certainly positive when all of them are clearly positive. A mask is
therefore known tile by tile (:mod:`~mobilesam_srw.eval.sam.tiles`): tiles whose footprint holds one sign
are counted whole, and only the tiles along the mask's edge are computed pixel by pixel.

Those pixels must be the very values ATen's bilinear kernel gives, not approximations: the source index
``scale * (i + 0.5) - 0.5`` and the blends are computed as the kernel does. Which kernel and which
arithmetic is not assumed (:class:`Arithmetic`): float32 NCHW inputs take ATen's generic kernel, which
nests its blends rows outside columns, except with one thread and 3 channels (SAM's three masks per
prompt), or outputs with ``H + W <= 128``, where its channels-last kernel sums four corner terms; and a
build may or may not contract them into fused multiply-adds (this project's AVX-512 build does).
:meth:`UpscaleFrame.calibrated` compares our values bit for bit with ``postprocess_masks`` on a probe of
the frame with the calls' channels (every pixel of the border tiles, where the indices are clamped, and
of sampled interior tiles) and refuses the frame when no arithmetic matches; the caller then upscales
densely with ``postprocess_masks`` itself.

Fast pass: blends are first computed in plain float32; their error against any of these arithmetics is
below :data:`SIGN_MARGIN` times the largest logit, so only pixels that close to zero are recomputed in
the frame's arithmetic (fused multiply-adds emulated: float64 products are exact for float32 factors,
and the sum is rounded to odd before the final rounding to float32, which makes it correctly rounded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

POSITIVE_FLOOR = 1e-30  # a footprint whose logits all exceed this stays positive through two blends (>= 1/16 of it)
SIGN_MARGIN = 4e-5  # |fast - exact| < 2e-6 x the largest |logit| after two resizes; x20 for safety
DEFAULT_TILE = 16


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32, as a hardware fused multiply-add gives it.

    The float64 product of two float32 values is exact; the float64 sum is then made round-to-odd
    (its exact remainder, from Knuth's TwoSum, moves an even result one step towards it), and
    rounding that to float32 is correct (Boldo and Melquiond: 53 >= 24 + 2 bits).
    """
    product = a.double() * b.double()
    addend = c.double()
    total = product + addend
    virtual = total - product
    remainder = (product - (total - virtual)) + (addend - virtual)
    even = (total.view(torch.int64) & 1) == 0
    inexact = (remainder != 0) & even & torch.isfinite(total)
    if bool(inexact.any()):
        toward = torch.where(remainder > 0, torch.full_like(total, math.inf), torch.full_like(total, -math.inf))
        total = torch.where(inexact, torch.nextafter(total, toward), total)
    return total.float()


def _blend(first: torch.Tensor, second: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, fused: bool) -> torch.Tensor:
    """ATen's blend of two inputs: ``first * w0 + second * w1``, one FMA when ``fused``."""
    return fma32(first, w0, second * w1) if fused else first * w0 + second * w1


def _resize_cols(block: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
                 fused: bool) -> torch.Tensor:
    """``[K, R, C]`` -> ``[K, R, N]``: per tile, columns ``i0``/``i1`` ``[K, N]`` blended with ``w0``/``w1``."""
    shape = (block.shape[0], block.shape[1], i0.shape[1])
    left = torch.gather(block, 2, i0[:, None, :].expand(shape))
    right = torch.gather(block, 2, i1[:, None, :].expand(shape))
    return _blend(left, right, w0[:, None, :], w1[:, None, :], fused)


def _resize_rows(block: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
                 fused: bool) -> torch.Tensor:
    """``[K, R, N]`` -> ``[K, T, N]``: per tile, rows ``i0``/``i1`` ``[K, T]`` blended with ``w0``/``w1``.

    ATen nests rows outside columns: ``(a*c0 + b*c1)*r0 + (c*c0 + d*c1)*r1``, so blending the column
    blends of two rows is its very computation."""
    shape = (block.shape[0], i0.shape[1], block.shape[2])
    top = torch.gather(block, 1, i0[:, :, None].expand(shape))
    bottom = torch.gather(block, 1, i1[:, :, None].expand(shape))
    return _blend(top, bottom, w0[:, :, None], w1[:, :, None], fused)



def _corners(block: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor,
             wr0: torch.Tensor, wr1: torch.Tensor, wc0: torch.Tensor, wc1: torch.Tensor, fused: bool) -> torch.Tensor:
    """``[K, R, C]`` -> ``[K, T, N]`` as ATen's channels-last kernel blends: corner weights
    ``w00 = r0 * c0`` ... (rounded products), then ``a*w00 + b*w01 + c*w10 + d*w11`` left to right
    (when ``fused``: ``fma(d, w11, fma(c, w10, fma(a, w00, b*w01))))``, as the AVX-512 build compiles it).
    Rows ``r0``/``r1`` ``[K, T]``, columns ``c0``/``c1`` ``[K, N]``."""
    width = block.shape[2]
    flat = block.flatten(1)
    shape = (block.shape[0], r0.shape[1], c0.shape[1])

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.gather(flat, 1, (rows[:, :, None] * width + cols[:, None, :]).flatten(1)).view(shape)

    wr0, wr1, wc0, wc1 = wr0[:, :, None], wr1[:, :, None], wc0[:, None, :], wc1[:, None, :]
    terms = [(at(r0, c0), wr0 * wc0), (at(r0, c1), wr0 * wc1), (at(r1, c0), wr1 * wc0), (at(r1, c1), wr1 * wc1)]
    if fused:  # the compiler fuses the first product into the sum with the second, then each later one
        value = fma32(terms[0][0], terms[0][1], terms[1][0] * terms[1][1])
    else:
        value = terms[0][0] * terms[0][1] + terms[1][0] * terms[1][1]
    for corner, weight in terms[2:]:
        value = fma32(corner, weight, value) if fused else value + corner * weight
    return value


@dataclass(frozen=True)
class Arithmetic:
    """How an ATen bilinear kernel computes: ``kernel`` "nested" (the generic kernel: rows outermost,
    ``(a*c0 + b*c1)*r0 + (c*c0 + d*c1)*r1``) or "corners" (the channels-last kernel, which float32
    NCHW inputs take with one thread and 3 channels, or outputs with ``H + W <= 128``); whether the
    source index and the blends use FMAs."""

    kernel: str
    index_fused: bool
    blend_fused: bool


# in the order calibration tries them: this project's CPU build (AVX-512) is the first, then the channels-last
# kernel it takes with one thread and SAM's 3 masks, then the builds without FMAs
ARITHMETICS = tuple(Arithmetic(kernel, index, blend) for kernel in ("nested", "corners")
                    for index, blend in ((True, True), (False, False), (True, False), (False, True)))


@dataclass(frozen=True)
class Axis:
    """One axis of an ATen bilinear resize (``align_corners=False``): output ``i`` blends inputs
    ``i0[i]`` and ``i1[i]`` with weights ``w0[i]`` and ``w1[i]``."""

    i0: torch.Tensor
    i1: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor

    def __len__(self) -> int:
        return len(self.i0)

    def head(self, size: int) -> "Axis":
        """The first ``size`` outputs (the crop of the resized image's part)."""
        return Axis(self.i0[:size], self.i1[:size], self.w0[:size], self.w1[:size])


def bilinear_axis(size_in: int, size_out: int, fused: bool, device: torch.device | str = "cpu") -> Axis:
    """The indices and weights ATen's ``upsample_bilinear2d`` computes for one axis.

    ``scale = float(size_in) / size_out``; ``src = max(scale * (i + 0.5) - 0.5, 0)`` (one FMA when
    ``fused``); ``i0 = min(floor(src), size_in - 1)``, ``i1 = i0 + (i0 < size_in - 1)``,
    ``w1 = clamp(src - i0, 0, 1)``, ``w0 = 1 - w1``. Equal sizes copy (``w0 = 1``).
    """
    index = torch.arange(size_out, device=device)
    if size_in == size_out:
        return Axis(index, index, torch.ones(size_out, device=device), torch.zeros(size_out, device=device))
    scale = torch.tensor(size_in, dtype=torch.float32) / torch.tensor(size_out, dtype=torch.float32)
    centre = index.float() + 0.5
    if fused:
        source = fma32(scale.to(device).expand(size_out), centre, torch.full_like(centre, -0.5))
    else:
        source = scale.to(device) * centre - 0.5
    source = source.clamp_min(0)
    i0 = torch.clamp(source.floor().long(), max=size_in - 1)
    w1 = (source - i0.float()).clamp(0, 1)
    i1 = i0 + (i0 < size_in - 1).long()
    return Axis(i0, i1, 1 - w1, w1)


@dataclass(frozen=True)
class _TileAxis:
    """Per tile along one axis (rows or columns): its output indices and the blocks it reads.

    ``out``: ``[n, T]`` output indices (clamped; ``valid`` marks the real ones). ``mid``: ``[n, R2]``
    rows of the cropped encoder-size image the tile reads; ``mid_i0/mid_i1``: ``[n, T]`` positions of
    each output's two sources in ``mid``. ``low``: ``[n, R1]`` low-res rows read; ``low_i0/low_i1``:
    ``[n, R2]`` positions of each ``mid`` row's sources in ``low`` (None when the first resize is a copy).
    """

    out: torch.Tensor
    valid: torch.Tensor
    mid: torch.Tensor
    mid_i0: torch.Tensor
    mid_i1: torch.Tensor
    low: torch.Tensor
    low_i0: torch.Tensor | None
    low_i1: torch.Tensor | None
    w0: torch.Tensor  # [n, T] second-stage weights
    w1: torch.Tensor
    low_w0: torch.Tensor | None  # [n, R2] first-stage weights
    low_w1: torch.Tensor | None


def _block(start: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
    """``[n, K]`` indices ``start .. stop`` per row (inclusive), the tail repeating ``stop``."""
    width = int((stop - start).max()) + 1
    return torch.minimum(start[:, None] + torch.arange(width, device=start.device), stop[:, None])


def _tile_axis(first: Axis | None, second: Axis, tile: int) -> _TileAxis:
    size = len(second)
    count = -(-size // tile)
    out = torch.arange(count * tile, device=second.i0.device).view(count, tile)
    valid = out < size
    out = out.clamp(max=size - 1)
    mid = _block(second.i0[out[:, 0]], second.i1[out[:, -1]])
    mid_i0 = second.i0[out] - mid[:, :1]
    mid_i1 = second.i1[out] - mid[:, :1]
    if first is None:
        return _TileAxis(out, valid, mid, mid_i0, mid_i1, mid, None, None, second.w0[out], second.w1[out], None, None)
    low = _block(first.i0[mid[:, 0]], first.i1[mid[:, -1]])
    return _TileAxis(out, valid, mid, mid_i0, mid_i1, low, first.i0[mid] - low[:, :1], first.i1[mid] - low[:, :1],
                     second.w0[out], second.w1[out], first.w0[mid], first.w1[mid])


@dataclass(frozen=True)
class UpscaleFrame:
    """``postprocess_masks`` for one frame (low-res size, encoder size, resized input size, original size),
    as two bilinear resizes per axis, cut into ``tile x tile`` output tiles.

    Args:
        low_size: ``(h, w)`` of the decoder's logits.
        encoder_size: the encoder's square input (``image_encoder.img_size``).
        input_size: the resized image's ``(h, w)`` inside it (the crop).
        original_size: the original ``(h, w)``.
        arithmetic: ATen's (see the module docstring); :meth:`calibrated` finds it.
        tile: output tile side.
    """

    low_size: tuple[int, int]
    encoder_size: int
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    arithmetic: Arithmetic
    tile: int = DEFAULT_TILE
    device: torch.device | str = "cpu"
    rows: _TileAxis = field(init=False, repr=False)
    cols: _TileAxis = field(init=False, repr=False)

    def __post_init__(self) -> None:
        axes = []
        for dim in (0, 1):
            first = None
            if self.low_size[dim] != self.encoder_size:
                first = bilinear_axis(self.low_size[dim], self.encoder_size, self.arithmetic.index_fused,
                                      self.device)
                first = first.head(self.input_size[dim])
            elif self.input_size[dim] > self.encoder_size:
                raise ValueError(f"input size {self.input_size} exceeds the encoder's {self.encoder_size}")
            second = bilinear_axis(self.input_size[dim], self.original_size[dim], self.arithmetic.index_fused,
                                   self.device)
            axes.append(_tile_axis(first, second, self.tile))
        object.__setattr__(self, "rows", axes[0])
        object.__setattr__(self, "cols", axes[1])

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles per column and per row ``(Ty, Tx)``."""
        return len(self.rows.out), len(self.cols.out)

    def tile_area(self) -> torch.Tensor:
        """``[Ty, Tx]`` int32: pixels of each tile inside the image."""
        return (self.rows.valid.sum(1)[:, None] * self.cols.valid.sum(1)[None, :]).int()

    @property
    def read_size(self) -> tuple[int, int]:
        """``(rows, cols)``: the top-left part of the low-res logits any output pixel reads."""
        return int(self.rows.low.max()) + 1, int(self.cols.low.max()) + 1

    def footprint_signs(self, logits: torch.Tensor) -> torch.Tensor:
        """``[M, Ty, Tx]`` int8 class of each tile of each mask: 1 when every low-res logit its pixels read
        exceeds :data:`POSITIVE_FLOOR` (all pixels positive), 0 when none is above 0 (none positive),
        2 otherwise (computed pixel by pixel).

        Args:
            logits: ``[M, h, w]`` float32 low-res logits.
        """
        rows_read, cols_read = self.read_size
        logits = logits[:, :rows_read, :cols_read]
        above = (logits > POSITIVE_FLOOR).to(torch.uint8)
        some = (logits > 0).to(torch.uint8)
        rows, cols = self.rows.low, self.cols.low
        all_above = above[:, rows].amin(2)[:, :, cols].amin(3)
        any_above = some[:, rows].amax(2)[:, :, cols].amax(3)
        return torch.where(all_above.bool(), 1, torch.where(any_above.bool(), 2, 0)).to(torch.int8)

    @property
    def fast_is_exact(self) -> bool:
        """Whether plain float32 blends (the fast pass of :meth:`tile_values`) are ATen's arithmetic here."""
        return self.arithmetic.kernel == "nested" and not self.arithmetic.blend_fused

    def tile_values(self, logits: torch.Tensor, masks: torch.Tensor, tile_rows: torch.Tensor,
                    tile_cols: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """``[K, T, T]`` upscaled values of tiles ``(masks[k], tile_rows[k], tile_cols[k])`` of ``logits``
        (pixels outside the image repeat the border ones).

        The fast pass resizes along columns, then rows, in plain float32 (ATen's generic kernel nests its
        blends so: a row's column blend is the same number whichever output row reads it), on the small
        block of inputs each tile reads.

        Args:
            logits: ``[M, h, w]`` float32, contiguous.
            exact: in the frame's arithmetic (slow); else the fast pass (see :meth:`tile_positive`).
        """
        rows, cols = self.rows, self.cols
        height, width = logits.shape[-2:]
        offsets = rows.low[tile_rows][:, :, None] * width + cols.low[tile_cols][:, None, :]
        block = torch.take(logits, offsets + (masks * (height * width))[:, None, None])  # [K, R1, C1]
        corners = exact and self.arithmetic.kernel == "corners"
        fused = exact and self.arithmetic.blend_fused
        if rows.low_i0 is not None or cols.low_i0 is not None:
            if corners:
                r0, r1, wr0, wr1 = self._first_stage(rows, block.shape[1], tile_rows)
                c0, c1, wc0, wc1 = self._first_stage(cols, block.shape[2], tile_cols)
                block = _corners(block, r0, r1, c0, c1, wr0, wr1, wc0, wc1, fused=fused)
            else:
                if cols.low_i0 is not None:
                    block = _resize_cols(block, cols.low_i0[tile_cols], cols.low_i1[tile_cols], cols.low_w0[tile_cols],
                                         cols.low_w1[tile_cols], fused)
                if rows.low_i0 is not None:
                    block = _resize_rows(block, rows.low_i0[tile_rows], rows.low_i1[tile_rows], rows.low_w0[tile_rows],
                                         rows.low_w1[tile_rows], fused)
        second = (rows.mid_i0[tile_rows], rows.mid_i1[tile_rows], cols.mid_i0[tile_cols], cols.mid_i1[tile_cols],
                  rows.w0[tile_rows], rows.w1[tile_rows], cols.w0[tile_cols], cols.w1[tile_cols])
        if corners:
            return _corners(block, *second, fused=fused)
        r0, r1, c0, c1, wr0, wr1, wc0, wc1 = second
        return _resize_rows(_resize_cols(block, c0, c1, wc0, wc1, fused), r0, r1, wr0, wr1, fused)

    @staticmethod
    def _first_stage(axis: _TileAxis, size: int, tiles: torch.Tensor) -> tuple:
        """The first resize's local indices and weights along one axis (a copy where it is one)."""
        if axis.low_i0 is None:
            index = torch.arange(size, device=tiles.device).expand(len(tiles), -1)
            ones = torch.ones(index.shape, device=tiles.device)
            return index, index, ones, torch.zeros_like(ones)
        return axis.low_i0[tiles], axis.low_i1[tiles], axis.low_w0[tiles], axis.low_w1[tiles]

    def tile_positive(self, logits: torch.Tensor, masks: torch.Tensor, tile_rows: torch.Tensor,
                      tile_cols: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``[K, T, T]`` bool: the pixels of those tiles that ``postprocess_masks(...) > 0`` keeps (False
        outside the image), exactly: plain float32 decides every pixel farther than :data:`SIGN_MARGIN`
        times the mask's largest logit from zero, ATen's arithmetic the rest.

        Args:
            logits: ``[M, h, w]`` float32, contiguous and finite.
            scale: ``[M]`` the largest ``|logit|`` of each mask (computed when not given).
        """
        if scale is None:
            scale = logits.abs().amax((1, 2))
        values = self.tile_values(logits, masks, tile_rows, tile_cols)
        if not self.fast_is_exact:  # recompute, in ATen's arithmetic, what the fast pass could decide otherwise
            close = values.abs() <= (SIGN_MARGIN * scale[masks])[:, None, None]
            chosen = close.flatten(1).any(1).nonzero().flatten()
            if len(chosen):
                exact = self.tile_values(logits, masks[chosen], tile_rows[chosen], tile_cols[chosen], exact=True)
                values[chosen] = torch.where(close[chosen], exact, values[chosen])
        positive = values > 0
        edge = (~self.rows.valid[tile_rows].all(1) | ~self.cols.valid[tile_cols].all(1)).nonzero().flatten()
        if len(edge):  # tiles over the image's bottom or right edge: nothing outside it
            valid = self.rows.valid[tile_rows[edge]][:, :, None] & self.cols.valid[tile_cols[edge]][:, None, :]
            positive[edge] &= valid
        return positive

    def probe_tiles(self, seed: int = 0, interior: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles a calibration compares: every border tile (clamped indices) and ``interior`` sampled ones."""
        ty, tx = self.grid
        grid_rows, grid_cols = torch.meshgrid(torch.arange(ty), torch.arange(tx), indexing="ij")
        border = (grid_rows < 2) | (grid_rows >= ty - 2) | (grid_cols < 2) | (grid_cols >= tx - 2)
        inner = (~border).flatten().nonzero().flatten()
        generator = torch.Generator().manual_seed(seed)
        sampled = inner[torch.randperm(len(inner), generator=generator)[:interior]]
        chosen = torch.cat([border.flatten().nonzero().flatten(), sampled])
        return (chosen // tx).to(self.device), (chosen % tx).to(self.device)

    def matches(self, postprocess, channels: int = 1, seed: int = 0) -> bool:
        """Whether this frame's exact values equal ``postprocess(logits, input_size, original_size)``'s
        bit for bit on a random probe of ``channels`` masks (every border tile and sampled interior ones).

        ATen picks its kernel by the channels (SAM's 3 masks per prompt, or 1) and the thread count
        (see :class:`Arithmetic`), so the probe has the channels of the calls it stands for."""
        generator = torch.Generator().manual_seed(seed)
        probe = (torch.randn(1, channels, *self.low_size, generator=generator) * 8).to(self.device)
        reference = postprocess(probe, self.input_size, self.original_size)[0]
        tile_rows, tile_cols = self.probe_tiles(seed)
        rows, cols = self.rows.out[tile_rows][:, :, None], self.cols.out[tile_cols][:, None, :]
        for channel in range(channels):
            masks = torch.full((len(tile_rows),), channel, dtype=torch.long, device=self.device)
            ours = self.tile_values(probe[0], masks, tile_rows, tile_cols, exact=True)
            if not torch.equal(ours, reference[channel][rows, cols]):
                return False
        return True

    @classmethod
    def calibrated(cls, postprocess, low_size: tuple[int, int], encoder_size: int, input_size: tuple[int, int],
                   original_size: tuple[int, int], tile: int = DEFAULT_TILE, device: torch.device | str = "cpu",
                   channels: int = 1) -> "UpscaleFrame | None":
        """The frame whose arithmetic (:data:`ARITHMETICS`, in turn) reproduces ``postprocess`` of
        ``channels`` masks bit for bit, or None."""
        for arithmetic in ARITHMETICS:
            frame = cls(tuple(low_size), encoder_size, tuple(input_size), tuple(original_size), arithmetic, tile,
                        device)
            if frame.matches(postprocess, channels):
                return frame
        return None
