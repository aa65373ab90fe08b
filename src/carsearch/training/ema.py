"""`train.ema`: an exponential moving average of the weights, the library way
(torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn), updated after every optimizer
step. The training loop validates, keeps and saves the averaged weights; with `train.ema: null`
every method is a no-op and the raw weights are used."""

from __future__ import annotations

import contextlib

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float | None):
        self.model, self.decay = model, (float(decay) if decay else None)
        self.avg = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
            if self.decay
            else None
        )

    def update(self) -> None:
        if self.avg is not None:
            self.avg.update_parameters(self.model)

    def _averaged_state(self) -> dict:
        return self.avg.module.state_dict()

    @contextlib.contextmanager
    def swapped(self):
        """The averaged weights in the model for the duration (validation), the raw ones after."""
        if self.avg is None or int(self.avg.n_averaged) == 0:
            yield
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self._averaged_state())
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    def state_of_model(self) -> dict:
        """A CPU copy of the weights to keep as "best": the averaged ones when EMA is on."""
        src = self._averaged_state() if self.avg is not None and int(self.avg.n_averaged) else self.model.state_dict()
        return {k: v.detach().cpu().clone() for k, v in src.items()}

    def copy_to_model(self) -> None:
        if self.avg is not None and int(self.avg.n_averaged):
            self.model.load_state_dict(self._averaged_state())

    def state_dict(self) -> dict | None:
        return self.avg.state_dict() if self.avg is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.avg is not None and state is not None:
            self.avg.load_state_dict(state)
