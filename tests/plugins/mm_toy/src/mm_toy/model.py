"""A two-layer regressor: enough parameters to test freezing, checkpoints and DDP; optional
dropout makes a run depend on the RNG (exact-resume tests need randomness that matters).
``MM_TOY_BATCHES=<file>``: each training batch's ``epoch`` / ``iters`` / ``num_iters_per_epoch`` as a JSON line."""

import json
import os

import torch
from torch import nn

from mm_core.base.model import BaseModel


class ToyRegressor(BaseModel):
    def __init__(self, in_dim: int = 4, hidden: int = 8, freeze_encoder: bool = False, dropout: float = 0.0):
        super().__init__()
        self.encoder = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        return cls(in_dim=cfg.get("in_dim", 4), hidden=cfg.get("hidden", 8),
                   freeze_encoder=cfg.get("freeze_encoder", False), dropout=cfg.get("dropout", 0.0))

    def forward(self, samples):
        if self.training and os.environ.get("MM_TOY_BATCHES"):  # the position the runner adds, as LAVIS' does
            with open(os.environ["MM_TOY_BATCHES"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps({k: samples.get(k) for k in ("epoch", "iters", "num_iters_per_epoch")}) + "\n")
        hidden = torch.tanh(self.norm(self.encoder(samples["x"])))
        if self.dropout.p:  # without dropout the run draws no random numbers here
            hidden = self.dropout(hidden)
        pred = self.head(hidden).squeeze(-1)
        mse = torch.mean((pred - samples["y"]) ** 2)
        return {"loss": mse, "loss_mse": mse.detach()}
