"""Every reference state-dict listing (tests/fixtures/keys/*.json) is reproduced by its project
config: same keys in the same order, same shapes and dtypes, same parameter count, same
head pooling window and the same conv+linear GFLOPs at the train and test crops."""
import pytest
import torch

from tests.conftest import FIXTURES_DIR, REFERENCE_LISTINGS, reference_listing
from tests.models.model_helpers import project_cfg
from vov3d.models import build_model
from vov3d.models.complexity import conv_linear_flops, count_params

def _cfg(listing):
    return project_cfg(listing["project_config"], *listing["reference_overrides"])


def test_every_listing_in_the_fixtures_is_checked():
    import os

    on_disk = {n[:-5] for n in os.listdir(os.path.join(FIXTURES_DIR, "keys")) if n.endswith(".json")}
    assert on_disk == set(REFERENCE_LISTINGS)


@pytest.mark.parametrize("name", REFERENCE_LISTINGS)
def test_state_dict_params_pool_and_gflops_match_reference(name):
    listing = reference_listing(name)
    cfg = _cfg(listing)
    assert cfg.MODEL.MODEL_NAME == listing["model_name"]
    assert cfg.MODEL.NUM_CLASSES == listing["num_classes"]
    assert cfg.DATA.NUM_FRAMES == listing["num_frames"]
    assert cfg.DATA.TRAIN_CROP_SIZE == listing["train_crop_size"]
    assert cfg.DATA.TEST_CROP_SIZE == listing["test_crop_size"]
    with torch.device("meta"):
        model = build_model(cfg)

    got = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    expected = [list(entry) for entry in listing["state_dict"]]
    assert len(got) == listing["state_dict_num_entries"]
    for g, e in zip(got, expected):
        assert g == e
    assert got == expected

    assert count_params(model) == listing["params_total"]
    assert list(model.head.avg_pool.kernel_size) == listing["head_pool_size"]
    for crop in ("train_crop", "test_crop"):
        ref = listing["gflops_conv_linear"][crop]
        flops = conv_linear_flops(model, ref["input_shape"])
        # The listing is rounded to 1e-6 GFLOPs.
        assert abs(flops / 1e9 - ref["gflops"]) <= 1e-6, crop
