"""The KV cache and attention mask of the rows a pt engine is running, left-padded to one length.

This is what lets requests join a batch while it runs: new rows are prefilled
on their own, then their cache is padded on the left to the batch's length (or
the batch's to theirs) and stacked below it; the mask keeps the padding out of
attention. Finished rows are dropped, and so are the columns that became padding
for every row left. Rotary positions are already inside the cached keys, so
padding moves no token.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if not missing:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pad)


class PaddedBatch:
    def __init__(self):
        self.cache = None  # a transformers DynamicCache with one row per running choice
        self.mask: Optional[torch.Tensor] = None  # [rows, length], 0 on padding

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def _layers(self, cache):
        from transformers.cache_utils import DynamicLayer
        for layer in cache.layers:
            if type(layer) is not DynamicLayer:  # sliding-window or linear-attention layers keep other state
                raise NotImplementedError(f'the pt backend batches models with full attention only; this model '
                                          f'has {type(layer).__name__} cache layers')
        return cache.layers

    def join(self, cache, mask: torch.Tensor) -> None:
        """Stack rows prefilled on their own (their cache and mask) below the running ones."""
        if self.mask is None:
            self._layers(cache)
            self.cache, self.mask = cache, mask
            return
        length = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(mask, length, 1)])
        for old, new in zip(self._layers(self.cache), self._layers(cache)):
            old.keys = torch.cat([_pad_left(old.keys, length, -2), _pad_left(new.keys, length, -2)])
            old.values = torch.cat([_pad_left(old.values, length, -2), _pad_left(new.values, length, -2)])

    def grow(self) -> torch.Tensor:
        """The mask for one more token in every row (the decode step's attention mask)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        return self.mask

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, and drop the leading columns that are padding in all of them."""
        if not rows:
            self.cache = self.mask = None
            return
        if len(rows) == self.size:
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        first = int(self.mask.any(dim=0).int().argmax())  # the first column some row still uses
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
