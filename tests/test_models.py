"""Network registry: building MONAI networks from JSON specs, errors, DynUNet planning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medcnn.errors import ConfigError
from medcnn.models import (
    NETWORK_NAMES,
    build_network,
    dynunet_spec,
    network_patch_divisor,
    plan_dynunet,
    validate_network_spec,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: fastest on one thread


TINY_SPECS = {
    "unet": {"name": "unet", "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2],
             "num_res_units": 1},
    "basicunet": {"name": "basicunet", "in_channels": 2, "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]},
    "dynunet": {"name": "dynunet", "in_channels": 1, "out_channels": 2,
                "kernel_size": [[3, 3, 1], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2]],
                "upsample_kernel_size": [[2, 2, 1], [2, 2, 2]], "filters": [4, 8, 8]},
    "segresnet": {"name": "segresnet", "in_channels": 1, "out_channels": 2, "init_filters": 8,
                  "blocks_down": [1, 1], "blocks_up": [1]},
    "attentionunet": {"name": "attentionunet", "in_channels": 1, "out_channels": 2, "channels": [4, 8],
                      "strides": [2]},
    "unet2d": {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16],
               "strides": [2, 2]},
}


def _has_einops() -> bool:
    try:
        import einops  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("key", sorted(TINY_SPECS))
def test_build_after_json_round_trip_runs_and_keeps_the_patch(key):
    spec = json.loads(json.dumps(TINY_SPECS[key]))  # what a bundle stores
    net = build_network(spec)
    assert not net.training
    nd = spec.get("spatial_dims", 3)
    div = network_patch_divisor(spec)
    size = tuple(max(16, 2 * d) for d in div)  # instance norm needs > 1 voxel at the bottom
    assert all(s % d == 0 for s, d in zip(size, div))
    with torch.no_grad():
        out = net(torch.zeros((1, spec["in_channels"]) + size))
    assert tuple(out.shape) == (1, spec["out_channels"]) + size


@pytest.mark.parametrize("spec", [
    {"name": "unetr", "in_channels": 1, "out_channels": 2, "img_size": [16, 16, 16], "feature_size": 4,
     "hidden_size": 24, "mlp_dim": 48, "num_heads": 2},
    {"name": "swinunetr", "in_channels": 1, "out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
     "num_heads": [1, 1, 1, 1]},
])
def test_transformer_networks_build_or_name_the_missing_package(spec):
    if _has_einops():
        net = build_network(spec).eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 1, 64, 64, 64) if spec["name"] == "swinunetr" else torch.zeros(1, 1, 16, 16, 16))
        assert out.shape[1] == 2
    else:
        with pytest.raises(ConfigError, match="einops"):
            build_network(spec)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        build_network({"name": "vnet", "in_channels": 1, "out_channels": 2})
    msg = str(e.value)
    assert "'vnet'" in msg and all(n in msg for n in NETWORK_NAMES)


def test_unknown_kwarg_names_the_key_and_the_accepted_ones():
    spec = dict(TINY_SPECS["unet"], chanels=[4, 8])
    with pytest.raises(ConfigError) as e:
        build_network(spec)
    assert "'chanels'" in str(e.value) and "num_res_units" in str(e.value)


@pytest.mark.parametrize("spec, needle", [
    ({"name": "unet", "in_channels": 1, "out_channels": 2, "channels": [4, 8]}, "'strides'"),
    ({"name": "unet", "out_channels": 2, "channels": [4, 8], "strides": [2]}, "'in_channels'"),
    ({"name": "unet", "in_channels": 0, "out_channels": 2, "channels": [4, 8], "strides": [2]}, "'in_channels'"),
    ({"name": "unet", "spatial_dims": 4, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]},
     "spatial_dims"),
    ({"name": "swinunetr", "in_channels": 1, "out_channels": 2, "norm_layer": "LayerNorm"}, "'norm_layer'"),
    ({"in_channels": 1, "out_channels": 2}, "'name'"),
])
def test_bad_specs_say_which_key(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_network_spec(spec)


def test_non_json_values_are_refused():
    spec = dict(TINY_SPECS["unet"], act=torch.nn.ReLU)
    with pytest.raises(ConfigError, match="JSON value for 'act'"):
        validate_network_spec(spec)


def test_monai_rejection_becomes_config_error():
    spec = {"name": "unet", "in_channels": 1, "out_channels": 2, "channels": [4], "strides": []}
    with pytest.raises(ConfigError, match="MONAI"):
        build_network(spec)


# ---------------------------------------------------------------------------- DynUNet planning
def test_plan_dynunet_anisotropic_by_hand():
    # spacing 0.7 x 0.7 x 5 mm, patch 160 x 160 x 16. By hand (pool an axis while its spacing
    # is < 2x the finest and it has >= 8 voxels; kernel 1 along axes >= 2x the finest):
    #   level 0: spacing (0.7, 0.7, 5)  kernel (3,3,1)
    #   pool (2,2,1) -> (1.4, 1.4, 5), size (80, 80, 16), kernel (3,3,1)   [5 >= 2.8]
    #   pool (2,2,1) -> (2.8, 2.8, 5), size (40, 40, 16), kernel (3,3,3)   [5 < 5.6]
    #   pool (2,2,2) -> (5.6, 5.6, 10), size (20, 20, 8), kernel (3,3,3)
    #   pool (2,2,2) -> (11.2, 11.2, 20), size (10, 10, 4), kernel (3,3,3)
    #   pool (2,2,1) [z has 4 < 8 voxels] -> size (5, 5, 4); 5 poolings = max_levels
    plan = plan_dynunet((0.7, 0.7, 5.0), (160, 160, 16))
    assert plan["strides"] == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert plan["kernel_size"] == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert plan["upsample_kernel_size"] == plan["strides"][1:]


def test_plan_dynunet_isotropic_stops_at_min_size():
    # 64 -> 32 -> 16 -> 8 -> 4: four poolings, then 4 < 2 * min_size
    plan = plan_dynunet((1.0, 1.0, 1.0), (64, 64, 64))
    assert plan["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert all(k == [3, 3, 3] for k in plan["kernel_size"])


def test_dynunet_spec_builds_and_keeps_an_anisotropic_patch():
    spec = dynunet_spec(in_channels=1, out_channels=3, spacing=(0.8, 0.8, 4.0), patch_size=(32, 32, 8),
                        base_filters=4)
    div = network_patch_divisor(spec)
    assert div == tuple(int(np.prod([s[a] for s in spec["strides"]])) for a in range(3))
    assert all(p % d == 0 for p, d in zip((32, 32, 8), div))
    net = build_network(json.loads(json.dumps(spec)))
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 32, 32, 8))
    assert tuple(out.shape) == (1, 3, 32, 32, 8)


def test_plan_dynunet_rejects_bad_input():
    with pytest.raises(ConfigError):
        plan_dynunet((1.0, 0.0, 1.0), (32, 32, 32))
    with pytest.raises(ConfigError):
        plan_dynunet((1.0, 1.0), (32, 32, 32))
