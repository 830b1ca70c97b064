"""`ResumableDataLoader`: a DataLoader whose position in the epoch is saved in checkpoints.

Lightning (2.x) stores a training dataloader's state in the checkpoint only when the
*DataLoader object itself* has ``state_dict``/``load_state_dict`` (``FitLoop.on_save_checkpoint``
→ ``CombinedLoader._state_dicts``); on resume ``FitLoop.setup_data`` calls ``load_state_dict``
before it creates the epoch's iterator. This class forwards both to its batch sampler (a
`MixedLengthBatchSampler`), with the position counted where it matters: batches handed to the
training loop, not batches the DataLoader (and its workers) fetched ahead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """A `DataLoader` over a batch sampler with ``state_dict``/``load_state_dict`` (e.g.
    `MixedLengthBatchSampler`) that resumes mid-epoch exactly.

    ``state_dict()`` is the sampler's state with ``epoch`` the epoch being iterated and
    ``batches_yielded`` the number of batches this loader has yielded to its consumer in that
    epoch (a resumed iteration counts the skipped batches too). With ``num_workers > 0`` the
    sampler itself is ahead by the prefetched batches; counting at the consumer side is what
    makes the saved position the training loop's. ``load_state_dict(state)`` makes the next
    iteration yield the batches of ``state["epoch"]`` after the first ``batches_yielded`` ones.

    The sampler's iterator is created lazily, at the first ``next()``: Lightning creates the
    epoch iterator on resume *before* it calls ``set_epoch``, so an eager iterator would plan
    the checkpoint's epoch even when the checkpoint was taken at its last batch and training
    goes on with the next epoch (whose ``set_epoch`` clears the pending position).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("state_dict", "load_state_dict", "set_epoch"):
            if not callable(getattr(self.batch_sampler, name, None)):
                raise TypeError(
                    f"ResumableDataLoader needs a batch_sampler with {name}(), got {type(self.batch_sampler).__name__}"
                )
        self._epoch: int | None = None  # epoch of the current/last iteration (None: not iterated yet)
        self._consumed = 0  # batches yielded to the consumer in that epoch
        self._pending: tuple[int, int] | None = None  # (epoch, position) from load_state_dict

    def __iter__(self) -> Iterator[Any]:
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        epoch = sampler.state_dict()["epoch"]
        start = 0
        # The sampler keeps a loaded position only while its epoch is unchanged (see
        # `MixedLengthBatchSampler.set_epoch`) and uses it once; mirror that here.
        if self._pending is not None and self._pending[0] == epoch:
            start = self._pending[1]
        self._pending = None
        self._epoch, self._consumed = epoch, start
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def rewind(self, consumed: int) -> None:
        """Count only ``consumed`` batches of this epoch as used: a run interrupted inside a step
        saves the position of its last completed step, and the interrupted batch is redone."""
        self._consumed = min(self._consumed, consumed)

    def state_dict(self) -> dict[str, Any]:
        """The batch sampler's state with the consumer's position (see the class docstring)."""
        state = dict(self.batch_sampler.state_dict())
        if self._pending is not None:  # loaded but not iterated yet: keep the loaded position
            state["epoch"], state["batches_yielded"] = self._pending
        elif self._epoch is not None:
            state["epoch"], state["batches_yielded"] = self._epoch, self._consumed
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s epoch and position at the next iteration."""
        self.batch_sampler.load_state_dict(state)
        self._pending = (int(state["epoch"]), int(state["batches_yielded"]))
