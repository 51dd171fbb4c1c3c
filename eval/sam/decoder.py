"""SAM's mask decoder for many prompts on one image embedding, without repeating the image per prompt.

segment-anything's ``MaskDecoder.predict_masks`` repeats the image embedding once per prompt and
projects all ``h * w`` image tokens in every attention of ``TwoWayTransformer`` for every prompt.
But a prompt has only ``T`` tokens (about 7: the IoU and mask tokens and the prompt's own), so:

- before layer 0's image-to-token attention the image tokens are the same for every prompt: their
  projections (layer 0's token-to-image keys and values, image-to-token queries) are made once;
- every cross attention has ``T`` tokens on one side, so per prompt and head it is rank ``T``: a
  projection of the image tokens is moved onto the token side (``q . (x W_k^T + b_k) = (q W_k) . x + q . b_k``,
  whose last term, one per query, the softmax over the image tokens cancels;
  ``softmax . (x W_v^T + b_v) = (softmax . x) W_v^T + b_v``; ``out_proj(P V) = P (V W_o^T + b_o / heads)``,
  each head's softmax rows summing to 1); ``1 / sqrt(c)`` scales the ``T`` tokens' side;
- ``output_upscaling`` (2 x 2 transposed convolutions of stride 2, a channel LayerNorm, GELUs) mixes no
  pixels: it is run as per-pixel matrix products, and only the masks asked for are made.

What stays per prompt: the adds and LayerNorms of the image tokens, the upscaling and the
hypernetwork product. The numbers are SAM's to float rounding (the order of sums differs): a test
holds them to the reference ``MaskDecoder`` on random and on LiteMedSAM's real weights.
:func:`sparse_decoder` gives it only for segment-anything's own ``MaskDecoder``/``TwoWayTransformer``
(anything else, e.g. SAM 2's, keeps its own decoder).
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
from torch import Tensor, nn
from torch.nn import functional as F

from mobilesam_srw.sam.predictor import MaskDecoderCall


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """``[..., n, heads * c] -> [..., heads, n, c]``: ``Attention._separate_heads``."""
    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)


def _head_weights(linear: nn.Linear, num_heads: int) -> tuple[Tensor, Tensor]:
    """A projection's weight ``[heads, c, C]`` and bias ``[heads, c]`` by head (split as ``_separate_heads``)."""
    return linear.weight.unflatten(0, (num_heads, -1)), linear.bias.unflatten(0, (num_heads, -1))


def _shared_projection(linear: nn.Linear, x: Tensor, num_heads: int) -> Tensor:
    """``linear(x)`` of the shared image tokens ``[N, C]`` by head: ``[heads, c, N]``."""
    return linear(x).view(x.shape[0], num_heads, -1).permute(1, 2, 0)


def tokens_to_image(attn: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``attn(q=q, k=k, v=v)`` (transformer.py ``Attention.forward``) for ``T`` query tokens ``q`` ``[B, T, C]``
    and image tokens ``k, v``: ``[N, C]`` the same for every prompt (projected once, SAM's order of
    operations per head) or ``[B, N, C]`` per prompt, then without projecting the ``N`` image tokens: the
    key projection is moved onto the queries (``(q W_k) k^T``; its bias adds ``q . b_k``, the same for
    every image token, which the softmax over the image tokens cancels), the value projection after the
    softmax (``(P v) W_v^T + b_v``, the rows of ``P`` summing to 1). ``1 / sqrt(c)`` scales the queries
    (SAM scales the products); heads recombined and ``out_proj`` as SAM."""
    batch, tokens, _ = q.shape
    heads = attn.num_heads
    query = _heads(attn.q_proj(q), heads)  # [B, h, T, c]
    query = query * (1 / math.sqrt(query.shape[-1]))
    if k.dim() == 2:
        query = query.permute(1, 0, 2, 3).flatten(1, 2)  # [h, B*T, c]
        weights = torch.softmax(torch.bmm(query, _shared_projection(attn.k_proj, k, heads)), dim=-1)
        out = torch.bmm(weights, _shared_projection(attn.v_proj, v, heads).transpose(1, 2))  # [h, B*T, c]
        out = out.view(heads, batch, tokens, -1).permute(1, 2, 0, 3)
    else:
        w_k, _ = _head_weights(attn.k_proj, heads)
        moved = torch.einsum("bhtc,hcd->bhtd", query, w_k).flatten(1, 2)  # [B, h*T, C]
        weights = torch.softmax(torch.bmm(moved, k.transpose(1, 2)), dim=-1)  # [B, h*T, N]
        mixed = torch.bmm(weights, v).view(batch, heads, tokens, -1)  # P v: [B, h, T, C]
        w_v, b_v = _head_weights(attn.v_proj, heads)
        out = (torch.einsum("bhtd,hcd->bhtc", mixed, w_v) + b_v[:, None]).transpose(1, 2)  # P v_proj(v)
    return attn.out_proj(out.flatten(2))


def image_to_tokens(attn: Attention, q: Tensor, k: Tensor, v: Tensor, residual: Tensor) -> Tensor:
    """``residual + attn(q=q, k=k, v=v)`` (transformer.py ``Attention.forward``; the block's ``keys + attn_out``)
    for image tokens ``q`` ``[N, C]`` (shared by every prompt: projected once) or ``[B, N, C]`` and ``T``
    tokens ``k, v`` ``[B, T, C]``. For per-prompt ``q`` the query projection is moved onto the tokens
    (``q (k W_q)^T + b_q . k``); ``1 / sqrt(c)`` scales the keys (SAM scales the products); the softmax
    over the tokens; ``out_proj`` before the attention product (``sum_heads P_h (v_h W_o,h^T + b_o / heads)``,
    each head's ``P`` rows summing to 1), so no ``[B, N, C]`` projection is made. ``residual`` ``[B, N, C]``
    is added to in place."""
    batch, tokens, _ = k.shape
    heads = attn.num_heads
    key = _heads(attn.k_proj(k), heads)  # [B, h, T, c]
    key = key * (1 / math.sqrt(key.shape[-1]))
    if q.dim() == 2:  # the same image tokens for every prompt
        logits = torch.bmm(key.permute(1, 0, 2, 3).flatten(1, 2), _shared_projection(attn.q_proj, q, heads))
        logits = logits.view(heads, batch, tokens, -1).transpose(0, 1)  # [B, h, T, N]
    else:
        w_q, b_q = _head_weights(attn.q_proj, heads)
        moved = torch.einsum("bhtc,hcd->bhtd", key, w_q).flatten(1, 2)  # [B, h*T, C]
        logits = torch.bmm(moved, q.transpose(1, 2))  # k . q_proj(q) less its bias: [B, h*T, N]
        logits += torch.einsum("bhtc,hc->bht", key, b_q).flatten(1)[..., None]
        logits = logits.view(batch, heads, tokens, -1)
    weights = torch.softmax(logits, dim=2).reshape(batch, heads * tokens, -1)  # over the tokens: [B, h*T, N]
    value = _heads(attn.v_proj(v), heads)  # [B, h, T, c]
    w_o = attn.out_proj.weight.unflatten(1, (heads, -1))  # [C, h, c]
    projected = torch.einsum("bhtc,dhc->bhtd", value, w_o) + attn.out_proj.bias / heads
    projected = projected.flatten(1, 2)  # [B, h*T, C]
    if residual.dim() == 2:
        return torch.baddbmm(residual, weights.transpose(1, 2), projected)
    return residual.baddbmm_(weights.transpose(1, 2), projected)


def two_way_block(block: TwoWayAttentionBlock, queries: Tensor, keys: Tensor, query_pe: Tensor,
                  key_pe: Tensor) -> tuple[Tensor, Tensor]:
    """``TwoWayAttentionBlock.forward`` (transformer.py) step by step, its cross attentions by
    :func:`tokens_to_image` / :func:`image_to_tokens`; ``keys`` ``[N, C]`` (the same for every prompt,
    layer 0) or ``[B, N, C]``; returns per-prompt keys ``[B, N, C]``."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)

    q = queries + query_pe
    k = keys + key_pe  # both cross attentions' (the keys change only after them)
    queries = block.norm2(queries + tokens_to_image(block.cross_attn_token_to_image, q, k, keys))

    queries = block.norm3(queries + block.mlp(queries))

    q = queries + query_pe
    keys = image_to_tokens(block.cross_attn_image_to_token, k, q, queries, residual=keys)
    return queries, block.norm4(keys)


def upscaled_masks(upscaling: nn.Sequential, src: Tensor, hyper_in: Tensor, size: tuple[int, int]) -> Tensor:
    """``(hyper_in @ output_upscaling(src))`` (mask_decoder.py ``predict_masks``) for ``src`` ``[B, h*w, C]``
    (the transformer's keys), ``hyper_in`` ``[B, M, C // 8]``: ``[B, M, 4h, 4w]``.

    Each ``ConvTranspose2d(kernel_size=2, stride=2)`` maps one pixel's channels to its 2 x 2 output pixels,
    and LayerNorm2d and GELU act per pixel, so the stack is per-pixel matrix products, kept channels-last.
    """
    first, norm, act1, second, act2 = upscaling
    if not (isinstance(first, nn.ConvTranspose2d) and isinstance(norm, LayerNorm2d)
            and isinstance(second, nn.ConvTranspose2d)):
        raise TypeError("output_upscaling is not segment-anything's")
    batch, height, width = src.shape[0], *size

    def convolve(x: Tensor, conv: nn.ConvTranspose2d) -> Tensor:  # [..., Cin] -> [..., 2, 2, Cout]
        weight = conv.weight.permute(0, 2, 3, 1)  # [Cin, 2 (rows), 2 (columns), Cout]
        out = torch.addmm(conv.bias.repeat(4), x.reshape(-1, x.shape[-1]), weight.flatten(1))
        return out.view(*x.shape[:-1], 2, 2, -1)

    x = convolve(src, first)  # [B, N, 2, 2, C/4]
    x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
    x = act2(convolve(x, second))  # [B, N, 2, 2, 2, 2, C/8]
    masks = torch.bmm(x.view(batch, -1, x.shape[-1]), hyper_in.transpose(1, 2))  # [B, N*16, M]
    masks = masks.view(batch, height, width, 2, 2, 2, 2, -1)  # (h, w, row, column, row2, column2, M)
    return masks.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(batch, -1, 4 * height, 4 * width)


class SparseDecoder:
    """``MaskDecoder.forward`` of many prompts on one image embedding (see the module docstring).

    Called with ``MaskDecoder.forward``'s keywords; ``image_embeddings`` and ``image_pe`` are one image's
    (``[1, C, h, w]``) and ``dense_prompt_embeddings`` the same for every prompt (no mask input, as
    ``PromptEncoder`` gives it); else it calls the reference decoder.

    Args:
        decoder: segment-anything's ``MaskDecoder`` with its ``TwoWayTransformer``.
    """

    def __init__(self, decoder: MaskDecoder) -> None:
        self.decoder = decoder

    @torch.no_grad()
    def __call__(self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
                 dense_prompt_embeddings: Tensor, multimask_output: bool) -> tuple[Tensor, Tensor]:
        arguments = dict(image_embeddings=image_embeddings, image_pe=image_pe,
                         sparse_prompt_embeddings=sparse_prompt_embeddings,
                         dense_prompt_embeddings=dense_prompt_embeddings, multimask_output=multimask_output)
        dense = dense_prompt_embeddings
        if image_embeddings.shape[0] != 1 or image_pe.shape[0] != 1 or not (
                dense.stride(0) == 0 or torch.equal(dense, dense[:1].expand_as(dense))):
            return self.decoder(**arguments)
        decoder, transformer = self.decoder, self.decoder.transformer
        # predict_masks: output tokens before the prompt's; src = image + dense (here once, not repeated)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        src = image_embeddings + dense[:1]
        height, width = src.shape[-2:]
        # TwoWayTransformer.forward: tokens [N, C] of the image and its positional encoding
        keys = src[0].flatten(1).T
        key_pe = image_pe[0].flatten(1).T
        queries = tokens
        for layer in transformer.layers:
            queries, keys = two_way_block(layer, queries, keys, tokens, key_pe)
        if keys.dim() == 2:  # no layers: every prompt's keys are the image's
            keys = keys.expand(len(tokens), -1, -1)
        q = queries + tokens
        attn_out = tokens_to_image(transformer.final_attn_token_to_image, q, keys + key_pe, keys)
        hs = transformer.norm_final_attn(queries + attn_out)
        # predict_masks after the transformer, and forward's mask slice (only the masks asked for are made)
        chosen = range(1, decoder.num_mask_tokens) if multimask_output else range(0, 1)
        hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in chosen], dim=1)
        masks = upscaled_masks(decoder.output_upscaling, keys, hyper_in, (height, width))
        iou_pred = decoder.iou_prediction_head(hs[:, 0, :])
        return masks, iou_pred[:, chosen.start : chosen.stop]


def sparse_decoder(model: nn.Module) -> MaskDecoderCall | None:
    """A :class:`SparseDecoder` for a ``Sam``'s ``mask_decoder`` when it is segment-anything's own
    ``MaskDecoder`` with a ``TwoWayTransformer`` and SAM's output upscaling; else None (keep the reference)."""
    decoder = getattr(model, "mask_decoder", None)
    if type(decoder) is not MaskDecoder or type(decoder.transformer) is not TwoWayTransformer:
        return None
    upscaling = decoder.output_upscaling
    if not (len(upscaling) == 5 and all(isinstance(upscaling[i], nn.ConvTranspose2d) for i in (0, 3))
            and isinstance(upscaling[1], LayerNorm2d)
            and all(tuple(upscaling[i].kernel_size) == (2, 2) == tuple(upscaling[i].stride)
                    and tuple(upscaling[i].padding) == (0, 0) and upscaling[i].groups == 1
                    and tuple(upscaling[i].dilation) == (1, 1) and tuple(upscaling[i].output_padding) == (0, 0)
                    for i in (0, 3))):
        return None
    if not all(type(layer) is TwoWayAttentionBlock for layer in decoder.transformer.layers):
        return None
    return SparseDecoder(decoder)


def logits_options(predictor) -> dict[str, MaskDecoderCall]:
    """Keywords for a predictor's ``point_logits`` / ``box_logits`` on the sparse path: its model's
    :func:`sparse_decoder`, or none (the predictor's own decoder)."""
    decoder = sparse_decoder(getattr(predictor, "model", None))
    return {} if decoder is None else {"decoder": decoder}
