"""The loader contract (docs/FORMAT.md, section 6): what the training loop, evaluation and the benchmark may
rely on, whichever backend (pipeline.dali.DaliLoader, pipeline.reference.ReferenceLoader) make_loader returns."""
from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class Loader(Protocol):
    """One rank's batches of one split, epoch after epoch.

    len(loader)       batches per epoch on this rank (train: the same on every rank; val: this rank's share)
    iter(loader)      the rest of the current epoch, from the current position: (images, labels) on the device;
                      when it runs to the end, `epoch` goes up by one and `batch` back to 0
    epoch, batch      the position: the epoch being (or next to be) read, and the batches of it already yielded
    state_dict()      a plain dict of the position (and backend state) to store in a checkpoint
    load_state_dict() continue from such a dict: the next iteration yields what the saved loader would have
    """

    epoch: int
    batch: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
