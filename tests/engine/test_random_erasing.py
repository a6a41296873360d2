"""Random erasing of normalised training clips: one box on every frame, PySlowFast's area,
aspect and probability, its three fill modes, the clean first copy, reproducible seeds."""
import math

import pytest
import torch

from vov3d.engine.random_erasing import MAX_AREA, MIN_AREA, RandomErasing


def _eraser(probability=1.0, mode="const", max_count=1, copies=1, clean_first=False, seed=0):
    eraser = RandomErasing(probability, mode, max_count, copies, clean_first, torch.device("cpu"))
    eraser.seed(seed)
    return eraser


def _erased_masks(clips, reference):
    """[N, T, H, W] True where any channel changed."""
    return (clips != reference).any(dim=1)


def test_one_box_on_every_frame_with_the_reference_area_and_aspect():
    clips = torch.ones(400, 3, 4, 32, 40)
    out = _eraser(mode="const")(clips.clone())
    masks = _erased_masks(out, torch.ones(1))
    assert all(torch.equal(m[0], m[t]) for m in masks for t in range(4))  # the same box on all frames
    areas, ratios = [], []
    for m in masks[:, 0]:
        rows, cols = m.any(dim=1).nonzero(), m.any(dim=0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(m.sum()) == h * w  # a rectangle
        areas.append(h * w / (32 * 40))
        ratios.append(h / w)
    assert (out[masks.unsqueeze(1).expand_as(out)] == 0).all()  # const: zeros
    assert min(areas) > MIN_AREA * 0.6 and max(areas) < MAX_AREA * 1.25
    assert abs(sum(areas) / len(areas) - (MIN_AREA + MAX_AREA) / 2) < 0.02  # uniform area
    logs = [math.log(r) for r in ratios]
    assert min(logs) > math.log(0.3) - 0.35 and max(logs) < math.log(1 / 0.3) + 0.35
    assert abs(sum(logs) / len(logs)) < 0.12  # log-uniform aspect, symmetric about 1


def test_probability_count_and_the_clean_first_copy():
    clips = torch.ones(2000, 3, 1, 16, 16)
    out = _eraser(probability=0.25)(clips.clone())
    erased = _erased_masks(out, torch.ones(1)).flatten(1).any(dim=1).float().mean()
    assert abs(float(erased) - 0.25) < 0.03
    several = _eraser(max_count=3)(torch.ones(300, 3, 1, 64, 64))
    pieces = [int((several[i, 0, 0] == 0).sum()) for i in range(300)]
    assert min(pieces) > 0 and sum(pieces) / 300 < (MIN_AREA + MAX_AREA) / 2 * 64 * 64 * 1.1
    split = _eraser(copies=3, clean_first=True)(torch.ones(30, 3, 1, 16, 16))
    changed = _erased_masks(split, torch.ones(1)).flatten(1).any(dim=1)
    assert not changed[0::3].any() and changed[1::3].all() and changed[2::3].all()


@pytest.mark.parametrize("mode", ["rand", "pixel"])
def test_normal_fills_are_fresh_per_frame_and_standard(mode):
    clips = torch.full((200, 3, 3, 24, 24), 7.0)
    out = _eraser(mode=mode)(clips.clone())
    values = out[out != 7.0]
    assert abs(float(values.mean())) < 0.1 and abs(float(values.std()) - 1) < 0.1
    clip = out[0]
    box = clip[0, 0] != 7.0
    frames = [clip[:, t][:, box] for t in range(3)]
    assert not torch.equal(frames[0], frames[1])  # drawn per frame, as PySlowFast's cube erasing
    if mode == "rand":  # one value per channel and frame over the box
        assert all(bool((f == f[:, :1]).all()) for f in frames)


def test_the_same_seed_erases_the_same_boxes():
    clips = torch.randn(8, 3, 2, 16, 16)
    first, again = (_eraser(mode="pixel", seed=5)(clips.clone()) for _ in range(2))
    other = _eraser(mode="pixel", seed=6)(clips.clone())
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_from_cfg_is_off_without_aug_or_probability():
    from vov3d.config import get_cfg

    cfg = get_cfg()
    assert RandomErasing.from_cfg(cfg, torch.device("cpu")) is None
    cfg.AUG.ENABLE = True
    eraser = RandomErasing.from_cfg(cfg, torch.device("cpu"))
    assert (eraser.probability, eraser.mode, eraser.max_count) == (0.25, "pixel", 1)
    cfg.AUG.RE_PROB = 0.0
    assert RandomErasing.from_cfg(cfg, torch.device("cpu")) is None
