"""Attention for the pt backend on a CPU: torch's SDPA, handed grouped key/value heads as they are.

transformers' own 'sdpa' attention copies every key/value head once per query head
(repeat_kv) whenever a mask is given, because CUDA's fast kernels take no mask with
grouped heads. A batch of left-padded rows always has a mask, and on a CPU torch's SDPA
takes grouped heads with a mask (enable_gqa), so the copy is pure cost: skipping it took
the demo model from 3.7k to 5.0k tokens/s at 16 requests here (bench/RESULTS.md).
It is registered through transformers' AttentionInterface, with the sdpa mask.
"""
import torch.nn.functional as F

NAME = 'swiftnb_sdpa_gqa'


def sdpa_gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                       is_causal=None, **kwargs):
    is_causal = is_causal if is_causal is not None else getattr(module, 'is_causal', True)
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal  # as transformers' sdpa decides it
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=is_causal, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """The attn_implementation name to load a model with."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, sdpa_gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
