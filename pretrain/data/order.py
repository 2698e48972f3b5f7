"""Which blocks each rank trains on at each step, without a stateful DataLoader.

Epoch e visits the training blocks in a permutation seeded from (seed, e). One optimizer step consumes
`global_batch = batch_size x world_size x grad_accum` consecutive entries of it: micro-batch m of rank r is the slice
[(m*W + r)*B, (m*W + r + 1)*B) of the step's window, so 2 processes x batch b see exactly what 1 process x 2b sees.
A partial window at the end of an epoch is dropped. The data position is just (epoch, index): saved in the
checkpoint, it makes a resumed run read the same blocks, whatever the world size.

Streaming corpora (StreamOrder) have no length to permute: each rank reads its own shard in order, one step takes
batch_size x grad_accum blocks from it, and the position is (epoch, blocks this rank read in the epoch), the same
on every rank. A resume re-reads and skips that many blocks (a stream cannot seek), with the same world size.
"""
from __future__ import annotations

import hashlib

import torch

from ..errors import UserError


def mix_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints / strings (stable across processes and Python runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


class DataOrder:
    def __init__(self, blocks, seed: int, batch_size: int, world_size: int, grad_accum: int):
        self.blocks, self.n, self.seed = blocks, len(blocks), seed
        self.b, self.w = batch_size, world_size
        self.global_batch = batch_size * world_size * grad_accum
        if self.global_batch > self.n:
            raise UserError(f"the corpus has {self.n} training blocks, fewer than one step's "
                            f"{self.global_batch} (batch_size {batch_size} x {world_size} processes x grad_accum "
                            f"{grad_accum}); use a larger corpus or a smaller run.batch_size / run.seq_len")
        self._perm_epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            self._perm = torch.randperm(self.n, generator=generator(self.seed, "data", epoch))
            self._perm_epoch = epoch
        return self._perm

    def step_indices(self, epoch: int, index: int) -> tuple[torch.Tensor, int, int]:
        """Indices of the whole global batch of the step at position (epoch, index), and the next position."""
        if index + self.global_batch > self.n:
            epoch, index = epoch + 1, 0
        window = self.permutation(epoch)[index: index + self.global_batch]
        return window, epoch, index + self.global_batch

    def local(self, window: torch.Tensor, micro: int, rank: int) -> torch.Tensor:
        start = (micro * self.w + rank) * self.b
        return window[start: start + self.b]

    def micro_batch(self, window: torch.Tensor, micro: int, rank: int) -> torch.Tensor:
        """The blocks (LongTensor [B, L]) of micro-batch `micro` on `rank`."""
        return get_blocks(self.blocks, self.local(window, micro, rank))


class StreamOrder:
    """The data order of a streaming corpus (see the module docstring). `all_ranks_ok(bool) -> bool` is True when
    every rank could read a full step; when one cannot, all move to the next epoch together."""

    def __init__(self, stream, batch_size: int, world_size: int, grad_accum: int, all_ranks_ok=lambda ok: ok):
        self.stream, self.b, self.accum, self.all_ranks_ok = stream, batch_size, grad_accum, all_ranks_ok
        self.global_batch = batch_size * world_size * grad_accum
        self._rows, self._at = None, None  # open iterator and the (epoch, index) it stands at

    def _take(self, epoch: int, index: int, n: int) -> list:
        if self._at != (epoch, index):  # a fresh start, a new epoch or a resume: read the shard up to index again
            self._rows = iter(self.stream)
            for _ in zip(range(index), self._rows):
                pass
        rows = [row["input_ids"] for _, row in zip(range(n), self._rows)]  # range first: zip pulls no extra row
        self._at = (epoch, index + len(rows))
        return rows

    def step_indices(self, epoch: int, index: int) -> tuple[torch.Tensor, int, int]:
        """This rank's blocks for the whole step ([grad_accum * B, L]), and the next position."""
        n = self.b * self.accum
        rows = self._take(epoch, index, n)
        if not self.all_ranks_ok(len(rows) == n):  # a shard ran out: the partial step is dropped, as with DataOrder
            epoch, index = epoch + 1, 0
            rows = self._take(epoch, index, n)
            if not self.all_ranks_ok(len(rows) == n):
                raise UserError(f"the streamed corpus gives a process fewer than one step's {n} training blocks "
                                f"(batch_size {self.b} x grad_accum {self.accum}); use a larger corpus or a "
                                f"smaller run.batch_size / run.seq_len")
        window = torch.stack([torch.as_tensor(r) for r in rows]).long()
        return window, epoch, index + n

    def micro_batch(self, window: torch.Tensor, micro: int, rank: int) -> torch.Tensor:
        return window[micro * self.b: (micro + 1) * self.b]


def get_blocks(blocks, indices: torch.Tensor) -> torch.Tensor:
    """Rows of a LongTensor [N, L] or of a datasets.Dataset with an "input_ids" column, as LongTensor [B, L]."""
    if isinstance(blocks, torch.Tensor):
        return blocks[indices]
    rows = blocks[indices.tolist()]["input_ids"]
    if isinstance(rows, torch.Tensor):
        return rows.long()
    if isinstance(rows, list) and rows and isinstance(rows[0], torch.Tensor):
        return torch.stack(rows).long()
    return torch.tensor(rows, dtype=torch.long)
