"""Records ``{"x": [floats], "y": float}`` in JSON files."""

import torch

from mm_core.base.builder import BaseDatasetBuilder
from mm_core.base.dataset import BaseDataset
from mm_core.base.processor import BaseProcessor


class ScaleProcessor(BaseProcessor):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def __call__(self, x):
        return [v * self.scale for v in x]

    @classmethod
    def from_config(cls, cfg=None):
        return cls(scale=(cfg or {}).get("scale", 1.0))


class ToyRegressionDataset(BaseDataset):
    def __getitem__(self, index):
        ann = self.annotation[index]
        x = self.text_processor(ann["x"]) if self.text_processor else ann["x"]
        return {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(float(ann["y"])),
                "instance_id": ann["instance_id"]}


class ToyRegressionBuilder(BaseDatasetBuilder):
    train_dataset_cls = ToyRegressionDataset
    eval_dataset_cls = ToyRegressionDataset
