"""Embed and score samples with a trained in-loop CLIP: L2-normalised image and text embeddings and their cosine.

What a round makes of the cosines (the score types `crossfit`, `cosine`, `ckpt_avg`, ...) is registered in
`sfcomp.scoretypes`, with the arithmetic in `sfcomp.crossfit`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .model import to_model_input, to_token_tensor


def _encode(model, x, t):
    import torch.nn.functional as F

    img = F.normalize(model.encode_image(x).float(), dim=-1)
    txt = F.normalize(model.encode_text(t).float(), dim=-1)
    return img, txt


def embed_batches(model, batches: Iterable, preset: dict | None = None, device="cpu") -> Iterator[tuple]:
    """Yield (img_emb, txt_emb) float32 L2-normalised numpy arrays for each (images_u8, tokens) batch."""
    import torch

    preset = preset or {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    was_training = model.training
    model.eval()
    use_amp = preset.get("precision") == "amp_bf16" and torch.device(device).type == "cuda"
    try:
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            for images, tokens in batches:
                x = to_model_input(images, preset, device)
                t = to_token_tensor(tokens, device)
                img, txt = _encode(model, x, t)
                yield img.cpu().numpy(), txt.cpu().numpy()
    finally:
        model.train(was_training)


def embed_arrays(model, images_u8: np.ndarray, tokens: np.ndarray, batch_size: int = 512, device="cpu",
                 preset: dict | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(img_emb, txt_emb): float32, L2-normalised, one row per input row."""
    from tqdm.auto import tqdm

    n = len(images_u8)
    model_device = next(model.parameters()).device
    if str(model_device) != str(device):
        model.to(device)
    starts = range(0, n, batch_size)
    batches = ((images_u8[s : s + batch_size], tokens[s : s + batch_size]) for s in starts)
    imgs, txts = [], []
    for img, txt in tqdm(embed_batches(model, batches, preset, device), total=len(starts), desc="embed",
                         disable=not progress, leave=False, dynamic_ncols=True):
        imgs.append(img)
        txts.append(txt)
    d = model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None else 0
    if not imgs:
        return np.zeros((0, d), np.float32), np.zeros((0, d), np.float32)
    return np.concatenate(imgs), np.concatenate(txts)


def cosine_scores(img_emb: np.ndarray, txt_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of L2-normalised embeddings, float32."""
    return np.einsum("ij,ij->i", img_emb, txt_emb).astype(np.float32)
