"""The input step: uint8 loader clips -> normalised float32 on the model's device, channel
order, batch layouts, refusals; GPU copies where CUDA exists."""
import pytest
import torch

from tests.engine.tiny_parts import tiny_cfg
from vov3d.engine.input_step import InputStep

CPU = torch.device("cpu")
MEAN, STD = [0.1, 0.2, 0.3], [0.5, 0.25, 0.2]


def step(tmp_path, reverse=False, device=CPU):
    cfg = tiny_cfg(tmp_path, "DATA.MEAN", str(MEAN), "DATA.STD", str(STD),
                   "DATA.REVERSE_INPUT_CHANNEL", str(reverse))
    return InputStep(cfg, device)


def bgr_clip():
    """uint8 [3, 2, 3, 3]: channels 255, 0, 51 ("B", "G", "R" as OpenCV delivers)."""
    clip = torch.zeros(3, 2, 3, 3, dtype=torch.uint8)
    clip[0], clip[1], clip[2] = 255, 0, 51
    return clip


def test_normalises_per_channel_in_loader_order_then_reverses(tmp_path):
    plain = step(tmp_path).clips(bgr_clip())
    assert plain.shape == (3, 2, 3, 3) and plain.dtype == torch.float32
    assert torch.allclose(plain[:, 0, 0, 0], torch.tensor([(1 - .1) / .5, (0 - .2) / .25, (.2 - .3) / .2]))
    # Normalise in loader order, then reverse the channel axis (the reference's order).
    assert torch.allclose(step(tmp_path, reverse=True).clips(bgr_clip()), plain.flip(0))


def test_every_value_and_batch_layout(tmp_path):
    """All 256 grey levels, on a [B, K, 3, T, H, W] test batch: (x / 255 - MEAN) / STD to
    float32 rounding, the same for every leading index; the loader's tensor is untouched."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 1, 16, 16).expand(2, 3, 3, 2, 16, 16)
    batch = levels.clone()
    out = step(tmp_path, reverse=True).clips(batch)
    assert out.shape == batch.shape and torch.equal(batch, levels)
    expected = (levels.double() / 255 - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1, 1)) \
        / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1, 1)
    assert torch.allclose(out.double(), expected.flip(2), rtol=0, atol=1e-6)


def test_batches_move_inputs_and_labels(tmp_path):
    inputs, labels = step(tmp_path).batch([bgr_clip()[None]], torch.tensor([2]))
    assert len(inputs) == 1 and inputs[0].shape == (1, 3, 2, 3, 3) and labels.tolist() == [2]
    assert torch.equal(inputs[0][0], step(tmp_path).clips(bgr_clip()))


def test_gives_the_dtype_models_are_built_in(tmp_path):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        double = step(tmp_path).clips(bgr_clip())
    finally:
        torch.set_default_dtype(previous)
    assert double.dtype == torch.float64 and step(tmp_path).clips(bgr_clip()).dtype == torch.float32
    assert torch.allclose(double.float(), step(tmp_path).clips(bgr_clip()))


@pytest.mark.parametrize("clip", [torch.zeros(3, 2, 4, 4), torch.zeros(4, 2, 4, 4, dtype=torch.uint8),
                                  torch.zeros(3, 4, 4, dtype=torch.uint8)])
def test_refuses_what_datasets_do_not_return(tmp_path, clip):
    with pytest.raises(TypeError, match=r"uint8 clips \[\.\.\., 3, T, H, W\].*got torch\.\w+ \["):
        step(tmp_path).clips(clip)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the GPU copy and normalisation")
def test_gpu_result_equals_cpu(tmp_path):  # pragma: no cover - no CUDA on the test machines
    batch = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8).pin_memory()
    gpu = step(tmp_path, reverse=True, device=torch.device("cuda", 0)).clips(batch)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), step(tmp_path, reverse=True).clips(batch), rtol=0, atol=1e-6)
