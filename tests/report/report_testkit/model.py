"""``report_captioner``: learns the colour and the number of the shapes in the generated "shapes"
images; its loss has two terms (``loss_colour``, ``loss_count``) so the report has several loss
curves to draw. It captions an image as "<number> <colour> shapes"."""

import torch
from torch import nn

from mm_core.base.model import BaseModel

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
COUNTS = ["one", "two", "three"]


def _index(words: list[str], text: str) -> int:
    return next((i for i, w in enumerate(words) if w in text.split()), 0)


class ReportCaptioner(BaseModel):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.colour = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, len(COLOURS)))
        self.count = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, len(COUNTS)))

    @classmethod
    def from_config(cls, cfg):
        return cls(hidden=int(cfg.get("hidden", 16)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        return torch.cat([flat.mean(-1), flat.amax(-1), flat.amin(-1)], dim=-1)

    def forward(self, samples):
        feats = self.features(samples["image"])
        texts = samples["text_input"]
        colour = torch.tensor([_index(COLOURS, t) for t in texts])
        count = torch.tensor([_index(COUNTS, t) for t in texts])
        loss_colour = nn.functional.cross_entropy(self.colour(feats), colour)
        loss_count = nn.functional.cross_entropy(self.count(feats), count)
        return {"loss": loss_colour + loss_count, "loss_colour": loss_colour, "loss_count": loss_count}

    def generate(self, samples, num_beams=1, max_new_tokens=30, min_length=1, **kwargs):
        feats = self.features(samples["image"])
        colours = self.colour(feats).argmax(-1).tolist()
        counts = self.count(feats).argmax(-1).tolist()
        return [f"{COUNTS[n]} {COLOURS[c]} shapes" for c, n in zip(colours, counts)]
