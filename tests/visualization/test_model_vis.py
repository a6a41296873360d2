"""MODEL_VIS and WRONG_PRED_VIS on a tiny model, read back from the event file."""
import io

import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from tests.engine.tiny_parts import TinyTestNet, tiny_cfg
from vov3d.visualization.model_vis import ModelVisualizer

NAMES = ["a", "b", "c", "d"]


def test_videos_weights_indexed_activations_and_wrong_predictions(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "subset.txt").write_text("b\nc\n")
    cfg = tiny_cfg(tmp_path, "TENSORBOARD.ENABLE", "True", "TENSORBOARD.MODEL_VIS.ENABLE", "True",
                   "TENSORBOARD.MODEL_VIS.MODEL_WEIGHTS", "True", "TENSORBOARD.MODEL_VIS.ACTIVATIONS", "True",
                   "TENSORBOARD.MODEL_VIS.INPUT_VIDEO", "True", "TENSORBOARD.MODEL_VIS.GRAD_CAM.ENABLE", "False",
                   "TENSORBOARD.MODEL_VIS.LAYER_LIST", "['conv 0,1', 'bn']",
                   "TENSORBOARD.WRONG_PRED_VIS.ENABLE", "True",
                   "TENSORBOARD.WRONG_PRED_VIS.SUBSET_PATH", str(tmp_path / "subset.txt"))
    torch.manual_seed(0)
    model = TinyTestNet(cfg)
    clips, labels = torch.randn(8, 3, 2, 8, 8), torch.arange(8) % 4
    with torch.no_grad():
        predicted = model.eval()(clips).argmax(dim=1)
    writer = SummaryWriter(str(tmp_path / "tb"))
    vis = ModelVisualizer(cfg, model, writer, NAMES, NAMES)
    vis.write_weights()
    vis.write_batch(clips, labels, first_index=10)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    wrong = {f"Incorrectly classified videos./Video {10 + i}: {NAMES[label]}"
             for i, (p, label) in enumerate(zip(predicted.tolist(), labels.tolist())) if p != label and label in (1, 2)}
    assert wrong  # the seed gives misclassified videos of the subset's classes
    expected = {"Layer Weights/conv"} | wrong  # bn has a weight too, but 1-D: shown as well
    expected |= {f"Input {i}/Pathway 1" for i in range(10, 18)}
    expected |= {f"Input {i}/Activations: {name}" for i in range(10, 18) for name in ("conv", "bn")}
    assert images == expected | {"Layer Weights/bn"}
    # 'conv 0,1': channels 0 and 1 of 6, each 2 frames of 8 x 8 -> 4 planes in a 2 x 2 grid.
    grid = events.Images("Input 10/Activations: conv")[0]
    assert (grid.width, grid.height) == (17, 17)
    video = Image.open(io.BytesIO(events.Images("Input 10/Pathway 1")[0].encoded_image_string))
    assert video.n_frames == 2
    assert vis.wrong_classes == {labels[i].item() for i in range(8)
                                 if predicted[i] != labels[i] and labels[i].item() in (1, 2)}
