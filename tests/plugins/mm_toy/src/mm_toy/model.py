"""A two-layer regressor: enough parameters to test freezing, checkpoints and DDP; optional
dropout makes a run depend on the RNG (exact-resume tests need randomness that matters)."""

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
        hidden = torch.tanh(self.norm(self.encoder(samples["x"])))
        if self.dropout.p:  # without dropout the run draws no random numbers here
            hidden = self.dropout(hidden)
        pred = self.head(hidden).squeeze(-1)
        mse = torch.mean((pred - samples["y"]) ** 2)
        return {"loss": mse, "loss_mse": mse.detach()}
