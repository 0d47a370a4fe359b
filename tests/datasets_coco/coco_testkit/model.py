"""``shape_captioner``: a tiny real model that learns the colour of the shapes from captions.

Training: a small MLP over the image's per-channel statistics predicts which colour word the
caption (or answer) contains; cross-entropy loss. Generation: "a picture of <colour> shapes"
for captions, "<colour>" for questions — so its scores rise as it learns.
"""

import torch
from torch import nn

from mm_core.base.model import BaseModel

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


class ShapeCaptioner(BaseModel):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, len(COLOURS)))

    @classmethod
    def from_config(cls, cfg):
        return cls(hidden=int(cfg.get("hidden", 16)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        return torch.cat([flat.mean(-1), flat.amax(-1), flat.amin(-1)], dim=-1)

    def forward(self, samples):
        logits = self.net(self.features(samples["image"]))
        texts = samples.get("text_output") or samples["text_input"]
        target = torch.tensor([next((i for i, c in enumerate(COLOURS) if c in t), 0) for t in texts])
        return {"loss": nn.functional.cross_entropy(logits, target)}

    def generate(self, samples, num_beams=1, max_new_tokens=30, min_length=1, **kwargs):
        colours = [COLOURS[i] for i in self.net(self.features(samples["image"])).argmax(-1).tolist()]
        if "text_input" in samples:  # a question
            return colours
        return [" ".join(f"a picture of {c} shapes".split()[:max_new_tokens]) for c in colours]
