"""A tiny registered model with BN and dropout, and the toy-video config it trains with: the
state a resumed run has to reproduce, cheap enough for end-to-end runs."""
import contextlib

import torch.nn as nn
import torch.nn.functional as F

from vov3d.models.registry import MODEL_REGISTRY


class ResumeDropoutNet(nn.Module):
    """conv -> bn -> pool -> dropout -> linear: BN statistics, two optimizer groups and
    dropout draws, the state a resumed run has to reproduce."""

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(2, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm3d(8)
        self.head = nn.Module()
        self.head.dropout = nn.Dropout(0.5)
        self.head.projection = nn.Linear(8, cfg.MODEL.NUM_CLASSES)

    def forward(self, x):
        x = x[0] if isinstance(x, (list, tuple)) else x
        x = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4))
        logits = self.head.projection(self.head.dropout(x))
        return logits if self.training else logits.softmax(dim=1)


TOY_CFG = """
TRAIN: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 2, EVAL_PERIOD: 1, CHECKPOINT_PERIOD: 1, AUTO_RESUME: True}
TEST: {ENABLE: True, DATASET: kinetics, BATCH_SIZE: 2, NUM_ENSEMBLE_VIEWS: 1, NUM_SPATIAL_CROPS: 1,
       SAVE_RESULTS_PATH: preds.pkl}
DATA: {NUM_FRAMES: 4, SAMPLING_RATE: 4, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,
       TEST_CROP_SIZE: 32, INPUT_CHANNEL_NUM: [3]}
BN: {USE_PRECISE_STATS: True, NUM_BATCHES_PRECISE: 2}
SOLVER: {BASE_LR: 0.05, LR_POLICY: cosine, MAX_EPOCH: 3, WARMUP_EPOCHS: 1.0, WARMUP_START_LR: 0.01}
MODEL: {NUM_CLASSES: 2, MODEL_NAME: ResumeDropoutNet}
DATA_LOADER: {NUM_WORKERS: 0, PIN_MEMORY: False}
NUM_GPUS: 0
RNG_SEED: 0
LOG_PERIOD: 1
LOG_MODEL_INFO: False
"""




@contextlib.contextmanager
def toy_model_registered():
    """MODEL.MODEL_NAME ResumeDropoutNet builds while the block runs."""
    with MODEL_REGISTRY.scoped():
        MODEL_REGISTRY.register(ResumeDropoutNet)
        yield
