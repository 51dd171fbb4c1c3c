"""Reference implementations the tests compare with, run in subprocesses (their packages are imported only there)."""

import textwrap

LITEMEDSAM_REFERENCE = textwrap.dedent(
    """
    # LiteMedSAM as its authors build and run it (CVPR24_LiteMedSAM_infer.py), on MobileSAM's own
    # modules: TinyViT with the 1x1 stride-1 stem, SAM's prompt encoder at 256 px, SAM's decoder.
    # Inputs: image_<i>.npy ([H, W, 3] uint8 originals) and boxes_<i>.npy ([N, 4] XYXY in original pixels, mapped
    # into the 256 px frame by MedSAM's own resize_box_to_256); output reference_<i>.pt per image.
    import os, sys, cv2, numpy as np, torch, torch.nn.functional as F
    from mobile_sam.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    from mobile_sam.modeling.tiny_vit_sam import Conv2d_BN, TinyViT
    checkpoint, folder = sys.argv[1], sys.argv[2]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    encoder = TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                      depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                      mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, mbconv_expand_ratio=4.0,
                      local_conv_size=3, layer_lr_decay=0.8)  # stages at 256/128/64/64, as LiteMedSAM's at 256 px
    encoder.patch_embed.seq[0] = Conv2d_BN(3, 32, 1, 1, 0)
    encoder.patch_embed.seq[2] = Conv2d_BN(32, 64, 1, 1, 0)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
                                   mask_in_chans=16)
    mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
        depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
        iou_head_hidden_dim=256)
    for module, prefix, unused in ((encoder, "image_encoder.", {"norm_head", "head"}),
                                   (prompt_encoder, "prompt_encoder.", set()), (mask_decoder, "mask_decoder.", set())):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(part, strict=False)
        assert not unexpected and {k.split(".")[0] for k in missing} <= unused, (missing, unexpected)
        module.eval()  # after loading: TinyViT caches its attention biases in eval()
    def resize_box_to_256(box, original_size):  # CVPR24_LiteMedSAM_infer.py, as its authors wrote it
        new_box = np.zeros_like(box)
        ratio = 256 / max(original_size)
        for i in range(len(box)):
            new_box[i] = int(box[i] * ratio)
        return new_box
    index = 0
    while os.path.exists(f"{folder}/image_{index}.npy"):  # image_<i>.npy and boxes_<i>.npy (original pixels, XYXY)
        image = np.load(f"{folder}/image_{index}.npy")
        boxes = np.load(f"{folder}/boxes_{index}.npy") if os.path.exists(f"{folder}/boxes_{index}.npy") else []
        H, W = image.shape[:2]
        scale = 256 / max(H, W)
        new_h, new_w = int(H * scale + 0.5), int(W * scale + 0.5)
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        scaled = (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)
        padded = np.pad(scaled, ((0, 256 - new_h), (0, 256 - new_w), (0, 0)))
        x = torch.tensor(padded).float().permute(2, 0, 1)[None]
        masks, ious = [], []
        with torch.no_grad():
            embedding = encoder(x)
            for box in boxes:  # one pass per box, encoder output straight into the decoder
                box256 = resize_box_to_256(box, original_size=(H, W))
                sparse, dense = prompt_encoder(points=None, boxes=torch.as_tensor(box256[None, None, ...],
                                               dtype=torch.float), masks=None)
                logits, iou = mask_decoder(image_embeddings=embedding, image_pe=prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
                logits = F.interpolate(logits[..., :new_h, :new_w], size=(H, W), mode="bilinear", align_corners=False)
                masks.append(torch.sigmoid(logits)[0, 0] > 0.5)
                ious.append(iou[0, 0])
        torch.save({"embedding": embedding,
                    "masks": torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool),
                    "ious": torch.stack(ious) if ious else torch.zeros(0)}, f"{folder}/reference_{index}.pt")
        index += 1
    """
)
