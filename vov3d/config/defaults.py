"""The configuration tree and its defaults.

Keys and defaults follow PySlowFast as forked by the VoV3D reference, so yaml files
and command lines written for it keep working. Keys of the references that no vov3d
model or loop reads are not in this tree: legacy.py lists them and says what becomes of
their values. Project additions are marked "vov3d:".
"""
from vov3d.config.node import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------------
# Processes (= GPUs) per machine; 0 runs one CPU process.
_C.NUM_GPUS = 1
# Machines in the job; always replaced by --num_shards.
_C.NUM_SHARDS = 1
# This machine's index; always replaced by --shard_id.
_C.SHARD_ID = 0
_C.OUTPUT_DIR = "./tmp"
_C.RNG_SEED = 1
_C.LOG_PERIOD = 10
_C.LOG_MODEL_INFO = True
# "nccl" is replaced by "gloo" for CPU runs (NUM_GPUS 0) when the config is validated.
_C.DIST_BACKEND = "nccl"
# vov3d: seconds a process waits in any collective before failing (and at the rendezvous of
# env:// and file:// init methods).
_C.DIST_TIMEOUT = 1800
# vov3d: seconds the processes of a tcp:// --init_method wait for each other to join; the
# waiting ones say every minute which ranks are missing.
_C.DIST_INIT_TIMEOUT = 300

# ---------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
_C.TRAIN.DATASET = "kinetics"
# Clips per machine (split over its NUM_GPUS processes).
_C.TRAIN.BATCH_SIZE = 64
_C.TRAIN.EVAL_PERIOD = 10
_C.TRAIN.CHECKPOINT_PERIOD = 10
_C.TRAIN.AUTO_RESUME = True
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
_C.TRAIN.CHECKPOINT_TYPE = "pytorch"
_C.TRAIN.CHECKPOINT_INFLATE = False
# vov3d: None = reset for explicit initialisation files unless they are resumed on
# purpose; True/False force the choice (reference default: False).
_C.TRAIN.CHECKPOINT_EPOCH_RESET = None
_C.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN = ()
# vov3d: checkpoints are read with torch.load(weights_only=True); set True only for
# trusted files that need full unpickling.
_C.TRAIN.CHECKPOINT_UNSAFE_LOAD = False
# vov3d: keep only the newest K epoch checkpoints (0 keeps all).
_C.TRAIN.CHECKPOINT_KEEP_LAST = 0
_C.TRAIN.MIXED_PRECISION = False
# If > 0, stop when a loss exceeds this factor times the mean of the previous five.
_C.TRAIN.KILL_LOSS_EXPLOSION_FACTOR = 0.0
# vov3d: micro-batches (of TRAIN.BATCH_SIZE per machine) whose gradients are summed into one
# optimiser step: the effective batch is TRAIN.BATCH_SIZE x NUM_SHARDS x this. The LR
# schedule, logs and checkpoints count optimiser steps; BN layers see the micro-batches; an
# epoch's last micro-batches that do not fill a step are left out, like the loader's
# incomplete last batch.
_C.TRAIN.GRAD_ACCUMULATION_STEPS = 1

# ---------------------------------------------------------------------------------
# Testing
# ---------------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.ENABLE = True
_C.TEST.DATASET = "kinetics"
_C.TEST.BATCH_SIZE = 8
_C.TEST.CHECKPOINT_FILE_PATH = ""
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
_C.TEST.NUM_SPATIAL_CROPS = 3
_C.TEST.CHECKPOINT_TYPE = "pytorch"
_C.TEST.CHECKPOINT_UNSAFE_LOAD = False
_C.TEST.SAVE_RESULTS_PATH = ""
# vov3d: how the views of one video are combined: "sum" or "max" of the softmax.
_C.TEST.ENSEMBLE_METHOD = "sum"
# vov3d: testing a model that loaded no checkpoint is refused unless this is set.
_C.TEST.ALLOW_RANDOM_INIT = False

# ---------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""
_C.DATA.PATH_LABEL_SEPARATOR = " "
_C.DATA.PATH_PREFIX = ""
# Kinetics: JSON class names (a list in label order, or {"name": index}), relative to
# PATH_TO_DATA_DIR; labels in the CSVs may then be names, and checkpoints record them (vov3d).
_C.DATA.CLASS_NAMES_PATH = ""
_C.DATA.NUM_FRAMES = 8
_C.DATA.SAMPLING_RATE = 8
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
_C.DATA.INPUT_CHANNEL_NUM = [3, 3]
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
_C.DATA.TRAIN_CROP_SIZE = 224
_C.DATA.TEST_CROP_SIZE = 256
_C.DATA.TARGET_FPS = 30
_C.DATA.DECODING_BACKEND = "pyav"
_C.DATA.INV_UNIFORM_SAMPLE = False
_C.DATA.RANDOM_FLIP = True
_C.DATA.REVERSE_INPUT_CHANNEL = False
# vov3d: newest-PySlowFast temporal test windows (one view = centre window).
_C.DATA.USE_OFFSET_SAMPLING = False
# vov3d: frame picked inside each segment for multi-view SSv1/SSv2 tests:
# "spread" (deterministic, distinct views), "midpoint" (PySlowFast), "random" (VoV3D).
_C.DATA.SEGMENT_TEST_SAMPLING = "spread"
# vov3d: validate on one deterministic centre view instead of the training augmentation.
_C.DATA.DETERMINISTIC_VAL = False
# vov3d: SSv2 only. "" = extracted frames via the frame lists; a file extension such as
# ".webm" = decode PATH_PREFIX/<video id><ext> directly (no extraction step).
_C.DATA.SSV2_VIDEO_EXT = ""

# ---------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# One of validate.MODEL_ARCHS: vov3d models have one pathway, so the reference default
# "slowfast" is not among them.
_C.MODEL.ARCH = "x3d"
_C.MODEL.MODEL_NAME = "SlowFast"
_C.MODEL.NUM_CLASSES = 400
_C.MODEL.LOSS_FUNC = "cross_entropy"
_C.MODEL.DROPOUT_RATE = 0.5
_C.MODEL.DROPCONNECT_RATE = 0.0
_C.MODEL.FC_INIT_STD = 0.01
_C.MODEL.HEAD_ACT = "softmax"
# BN layers stay in eval mode (running statistics frozen) while training.
_C.MODEL.FROZEN_BN = False
# vov3d: an exponential moving average of the parameters, updated after every optimiser
# step: ema = DECAY * ema + (1 - DECAY) * weights; buffers (BN statistics) are copied.
# Checkpoints hold it as "ema_state" (the layout of "model_state").
_C.MODEL.EMA = CfgNode()
_C.MODEL.EMA.ENABLE = False
_C.MODEL.EMA.DECAY = 0.9998
# With ENABLE: validation and the test (also of TEST.CHECKPOINT_FILE_PATH) use the averaged
# weights; False evaluates the trained weights and only stores the average.
_C.MODEL.EMA.EVAL = True

# ---------------------------------------------------------------------------------
# ResNet options (the X3D, VoV3D, CSN and SEVNet builders read these)
# ---------------------------------------------------------------------------------
_C.RESNET = CfgNode()
_C.RESNET.TRANS_FUNC = "bottleneck_transform"
_C.RESNET.NUM_GROUPS = 1
_C.RESNET.INPLACE_RELU = True
_C.RESNET.STRIDE_1X1 = False
_C.RESNET.ZERO_INIT_FINAL_BN = False
_C.RESNET.SPATIAL_DILATIONS = [[1], [1], [1], [1]]

# ---------------------------------------------------------------------------------
# X3D
# ---------------------------------------------------------------------------------
_C.X3D = CfgNode()
_C.X3D.WIDTH_FACTOR = 1.0
_C.X3D.DEPTH_FACTOR = 1.0
_C.X3D.BOTTLENECK_FACTOR = 1.0
_C.X3D.DIM_C5 = 2048
_C.X3D.DIM_C1 = 12
_C.X3D.SCALE_RES2 = False
_C.X3D.BN_LIN5 = False
_C.X3D.CHANNELWISE_3x3x3 = True

# ---------------------------------------------------------------------------------
# VoV3D (T-OSA blocks of D(2+1)D units)
# ---------------------------------------------------------------------------------
_C.VOV3D = CfgNode()
# 31 = VoV3D-M, 70 = VoV3D-L (stage depths from the table unless STAGE_DEPTHS is set).
# The default 19 (and TRANS_FUNC "OSA_transform") build nothing, as in the reference:
# building a model with them is an error naming the valid values.
_C.VOV3D.DEPTH = 19
# The only block transform: "t_osa_2plus1_transform".
_C.VOV3D.TRANS_FUNC = "OSA_transform"
# D(2+1)D units per T-OSA module.
_C.VOV3D.NUM_CONV = 5
# Base width c: stem c/2, stage widths c * OUT_MULTIPLIER / c * INNER_MULTIPLIER.
_C.VOV3D.INNER_CH = 64
# vov3d: explicit stage depths (e.g. [1, 1, 2, 2] for the first-release VoV3D-M);
# empty = take them from DEPTH.
_C.VOV3D.STAGE_DEPTHS = []
# vov3d: temporal dilation of each stage's D(2+1)D temporal conv ("same" padding). The
# reference ignored the key; the default [[1]] * 4 is its (undilated) behaviour.
_C.VOV3D.TEMPORAL_DILATIONS = [[1], [1], [1], [1]]
# vov3d: spatial stride (1 or 2) of each stage's first block. The reference applied
# entry [0] to all four stages; with the default both readings agree.
_C.VOV3D.SPATIAL_STRIDES = [[2], [2], [2], [2]]
_C.VOV3D.INNER_MULTIPLIER = [1, 2, 4, 8]
_C.VOV3D.OUT_MULTIPLIER = [0.5, 1.0, 2, 4]

# ---------------------------------------------------------------------------------
# CSN (channel-separated networks, ir- and ip- bottlenecks)
# ---------------------------------------------------------------------------------
_C.CSN = CfgNode()
_C.CSN.DEPTH = 152
# "ir" (interaction-reduced) or "ip" (interaction-preserved).
_C.CSN.BLOCK = "ir"
# 1e-3 for VMZ / mmaction2 weights, PyTorch's 1e-5 otherwise.
_C.CSN.BN_EPS = 1e-5

# ---------------------------------------------------------------------------------
# SEVNet (simple and efficient video networks)
# ---------------------------------------------------------------------------------
_C.SEVNET = CfgNode()
_C.SEVNET.GROUP_WIDTH = 8
_C.SEVNET.DEPTHS = [3, 4, 6, 3]
# "sev", "r2plus1d" or "r3d".
_C.SEVNET.BLOCK = "sev"
_C.SEVNET.R2PLUS1D_RATIO = 2.0
_C.SEVNET.R3D_RATIO = 2.6
# Squeeze-excitation in every block, reduction SE_REDUCTION.
_C.SEVNET.SE = False
_C.SEVNET.SE_REDUCTION = 4
# Downsample shortcut: average pool 1xKxK stride (1,2,2) (K = 3 padded, or 2), then a
# 1x1x1 conv followed by BN (SHORTCUT_BN) and ReLU (SHORTCUT_ACT).
_C.SEVNET.SHORTCUT_POOL_KERNEL = 3
_C.SEVNET.SHORTCUT_BN = True
_C.SEVNET.SHORTCUT_ACT = True
# Channel order of the downsample concat: "shortcut_main" (ShuffleNet) or "main_shortcut".
_C.SEVNET.CONCAT_ORDER = "shortcut_main"
_C.SEVNET.POST_ADD_RELU = False

# ---------------------------------------------------------------------------------
# CoX3D (continual X3D for frame-by-frame streaming)
# ---------------------------------------------------------------------------------
_C.COX3D = CfgNode()
# Frames averaged by the streaming head; 0 = DATA.NUM_FRAMES.
_C.COX3D.TEMPORAL_WINDOW = 0
# Temporal padding at the start of a stream: "zeros" or "replicate".
_C.COX3D.TEMPORAL_FILL = "zeros"
# Squeeze-excitation pooling while streaming: "frame" or "window".
_C.COX3D.SE_SCOPE = "frame"

# ---------------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------------
_C.BN = CfgNode()
_C.BN.USE_PRECISE_STATS = False
_C.BN.NUM_BATCHES_PRECISE = 200
_C.BN.WEIGHT_DECAY = 0.0
# "batchnorm" or "sync_batchnorm" (statistics shared by NUM_SYNC_DEVICES local GPUs).
_C.BN.NORM_TYPE = "batchnorm"
_C.BN.NUM_SYNC_DEVICES = 1
# vov3d: with MODEL.FROZEN_BN, also freeze BN weight and bias (mmaction2's "bnfrozen").
_C.BN.FROZEN_AFFINE = False

# ---------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
_C.SOLVER.BASE_LR = 0.1
_C.SOLVER.LR_POLICY = "cosine"
_C.SOLVER.COSINE_END_LR = 0.0
_C.SOLVER.COSINE_AFTER_WARMUP = False
# steps_with_relative_lrs: epochs where each LRS factor (times BASE_LR) starts.
_C.SOLVER.STEPS = []
_C.SOLVER.LRS = []
_C.SOLVER.MAX_EPOCH = 300
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.DAMPENING = 0.0
_C.SOLVER.NESTEROV = True
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WARMUP_EPOCHS = 0.0
_C.SOLVER.WARMUP_START_LR = 0.01
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
_C.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False
# vov3d: if > 0, BASE_LR, WARMUP_START_LR and COSINE_END_LR are scaled by (effective batch
# / REFERENCE_BATCH_SIZE), effective batch = TRAIN.BATCH_SIZE x NUM_SHARDS x
# TRAIN.GRAD_ACCUMULATION_STEPS.
_C.SOLVER.REFERENCE_BATCH_SIZE = 0
_C.SOLVER.ZERO_WD_1D_PARAM = False
_C.SOLVER.CLIP_GRAD_VAL = None
_C.SOLVER.CLIP_GRAD_L2NORM = None

# ---------------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------------
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8
_C.DATA_LOADER.PIN_MEMORY = True
_C.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE = False
# vov3d: attempts per sample before a video counts as failed.
_C.DATA_LOADER.NUM_RETRIES = 10

# ---------------------------------------------------------------------------------
# Mixup / CutMix / label smoothing of training batches (PySlowFast's keys and defaults)
# ---------------------------------------------------------------------------------
_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = False
# Beta(ALPHA, ALPHA) blend of two clips; 0 = no mixup.
_C.MIXUP.ALPHA = 0.8
# Beta(CUTMIX_ALPHA, CUTMIX_ALPHA) box area pasted from another clip; 0 = no cutmix
# (both alphas 0: label smoothing alone).
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability that a batch is mixed at all.
_C.MIXUP.PROB = 1.0
# With both alphas > 0: probability of cutmix rather than mixup for a mixed batch.
_C.MIXUP.SWITCH_PROB = 0.5
# Label smoothing of the targets: off-value s / NUM_CLASSES, on-value 1 - s + s / NUM_CLASSES.
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

# ---------------------------------------------------------------------------------
# RandAugment and random erasing of training clips (PySlowFast's keys and defaults)
# ---------------------------------------------------------------------------------
_C.AUG = CfgNode()
_C.AUG.ENABLE = False
# Augmented copies of each decoded training clip; the batch then holds
# TRAIN.BATCH_SIZE x NUM_SAMPLE clips (the copies of a video side by side).
_C.AUG.NUM_SAMPLE = 1
# Read by PySlowFast's image pipeline only, never with RandAugment; accepted for its files.
_C.AUG.COLOR_JITTER = 0.4
# RandAugment policy: rand-m<magnitude>-n<ops>-mstd<magnitude noise>-inc<0|1>-w<weights>.
_C.AUG.AA_TYPE = "rand-m9-mstd0.5-inc1"
# Interpolation of the geometric operations: bilinear, bicubic or random (either, per op).
_C.AUG.INTERPOLATION = "bicubic"
# Random erasing of the normalised clip (one box on all frames): probability per clip.
_C.AUG.RE_PROB = 0.25
# Erased values: const (0), rand (one normal value per channel), pixel (normal per pixel).
_C.AUG.RE_MODE = "pixel"
# Boxes per erased clip: uniform in [1, RE_COUNT], the area shared between them.
_C.AUG.RE_COUNT = 1
# With AUG.NUM_SAMPLE > 1: leave the first copy of every clip unerased (the clean split).
_C.AUG.RE_SPLIT = False

# ---------------------------------------------------------------------------------
# Multigrid training (Wu et al., CVPR 2020), PySlowFast's keys and defaults
# ---------------------------------------------------------------------------------
_C.MULTIGRID = CfgNode()
# Epochs of a multigrid schedule relative to SOLVER.MAX_EPOCH.
_C.MULTIGRID.EPOCH_FACTOR = 1.5
# Per iteration, cycle through crops of SHORT_CYCLE_FACTORS x DEFAULT_S and the full crop,
# with batches grown to keep the clip volume.
_C.MULTIGRID.SHORT_CYCLE = False
_C.MULTIGRID.SHORT_CYCLE_FACTORS = [0.5, 0.5 ** 0.5]
# Per epoch range, (frames, crop) factors of the base shape; the batch grows inversely.
_C.MULTIGRID.LONG_CYCLE = False
_C.MULTIGRID.LONG_CYCLE_FACTORS = [(0.25, 0.5 ** 0.5), (0.5, 0.5 ** 0.5), (0.5, 1), (1, 1)]
# BN statistics over sub-batches of this many clips, whatever the batch of a shape.
_C.MULTIGRID.BN_BASE_SIZE = 8
# Validations (and checkpoints) per long-cycle shape.
_C.MULTIGRID.EVAL_FREQ = 3
# Set by the schedule per shape (0 = DATA.SAMPLING_RATE); the DEFAULT_* keys hold the
# base TRAIN.BATCH_SIZE, DATA.NUM_FRAMES and DATA.TRAIN_CROP_SIZE the shapes scale.
_C.MULTIGRID.LONG_CYCLE_SAMPLING_RATE = 0
_C.MULTIGRID.DEFAULT_B = 0
_C.MULTIGRID.DEFAULT_T = 0
_C.MULTIGRID.DEFAULT_S = 0

# ---------------------------------------------------------------------------------
# TensorBoard: scalars, and PySlowFast's plots and visualisations under its key names
# ---------------------------------------------------------------------------------
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False
_C.TENSORBOARD.PREDICTIONS_PATH = ""
# Empty = OUTPUT_DIR/runs-<TRAIN.DATASET>.
_C.TENSORBOARD.LOG_DIR = ""
_C.TENSORBOARD.CLASS_NAMES_PATH = ""
_C.TENSORBOARD.CATEGORIES_PATH = ""
_C.TENSORBOARD.CONFUSION_MATRIX = CfgNode()
_C.TENSORBOARD.CONFUSION_MATRIX.ENABLE = False
_C.TENSORBOARD.CONFUSION_MATRIX.FIGSIZE = [8, 8]
_C.TENSORBOARD.CONFUSION_MATRIX.SUBSET_PATH = ""
_C.TENSORBOARD.HISTOGRAM = CfgNode()
_C.TENSORBOARD.HISTOGRAM.ENABLE = False
_C.TENSORBOARD.HISTOGRAM.SUBSET_PATH = ""
_C.TENSORBOARD.HISTOGRAM.TOPK = 10
_C.TENSORBOARD.HISTOGRAM.FIGSIZE = [8, 8]
_C.TENSORBOARD.MODEL_VIS = CfgNode()
_C.TENSORBOARD.MODEL_VIS.ENABLE = False
_C.TENSORBOARD.MODEL_VIS.MODEL_WEIGHTS = False
_C.TENSORBOARD.MODEL_VIS.ACTIVATIONS = False
_C.TENSORBOARD.MODEL_VIS.INPUT_VIDEO = False
_C.TENSORBOARD.MODEL_VIS.LAYER_LIST = []
_C.TENSORBOARD.MODEL_VIS.TOPK_PREDS = 1
_C.TENSORBOARD.MODEL_VIS.COLORMAP = "Pastel2"
_C.TENSORBOARD.MODEL_VIS.GRAD_CAM = CfgNode()
_C.TENSORBOARD.MODEL_VIS.GRAD_CAM.ENABLE = True
_C.TENSORBOARD.MODEL_VIS.GRAD_CAM.LAYER_LIST = []
_C.TENSORBOARD.MODEL_VIS.GRAD_CAM.USE_TRUE_LABEL = False
_C.TENSORBOARD.MODEL_VIS.GRAD_CAM.COLORMAP = "viridis"
_C.TENSORBOARD.WRONG_PRED_VIS = CfgNode()
_C.TENSORBOARD.WRONG_PRED_VIS.ENABLE = False
_C.TENSORBOARD.WRONG_PRED_VIS.TAG = "Incorrectly classified videos."
_C.TENSORBOARD.WRONG_PRED_VIS.SUBSET_PATH = ""

# ---------------------------------------------------------------------------------
# Demo (tools/demo_net.py, or run_net with DEMO.ENABLE): PySlowFast's classification keys.
# The top-k classes drawn: TENSORBOARD.MODEL_VIS.TOPK_PREDS, as in PySlowFast.
# ---------------------------------------------------------------------------------
_C.DEMO = CfgNode()
# run_net runs the demo (after training and testing, when those are enabled too).
_C.DEMO.ENABLE = False
# Class names: a JSON {"name": id} (PySlowFast's) or a JSON list in label order; "" = the
# names stored in the checkpoint, else "class <id>".
_C.DEMO.LABEL_FILE_PATH = ""
# A camera index; >= 0 takes precedence over INPUT_VIDEO.
_C.DEMO.WEBCAM = -1
_C.DEMO.INPUT_VIDEO = ""
# Size of the frames written or shown (0 = the input's); also asked of a webcam.
_C.DEMO.DISPLAY_WIDTH = 0
_C.DEMO.DISPLAY_HEIGHT = 0
# Frames two consecutive clip windows share (clip models; window = NUM_FRAMES x SAMPLING_RATE
# frames at TARGET_FPS, so a window starts every span - BUFFER_SIZE frames).
_C.DEMO.BUFFER_SIZE = 0
# The labelled video (.mp4, .mkv, .mov: h264; .avi: mjpeg; .webm: vp9), with the predictions
# beside it (same name, .jsonl); "" = show the frames in a window (needs an OpenCV with GUI)
# and write OUTPUT_DIR/demo_predictions.jsonl.
_C.DEMO.OUTPUT_FILE = ""
# Frame rate of the video written (-1 = the input's; fractional rates such as 29.97 work).
_C.DEMO.OUTPUT_FPS = -1.0
# Frames a prediction's labels stay on: -1 (vov3d) = until the next prediction; N >= 0 =
# 2N + 1 frames from the one it arrives at (PySlowFast draws a clip's labels on 2N + 1 frames).
_C.DEMO.CLIP_VIS_SIZE = -1
# Decode and encode frames in threads of their own, beside the model.
_C.DEMO.THREAD_ENABLE = False
# Predict one clip window in NUM_CLIPS_SKIP + 1; -1 (with THREAD_ENABLE) = the newest window
# whenever the model is free, for live input (clip models; CoX3D steps every frame: 0).
_C.DEMO.NUM_CLIPS_SKIP = 0


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
