"""Tests of lunglesionai.nets.densesharp: output shapes, input checks, config validation, size budget."""

from __future__ import annotations

import io

import pytest
import torch

from lunglesionai.nets.densesharp import DenseSharpConfig, DenseSharpNet

TINY = DenseSharpConfig(stem_channels=4, down_channels=8, growth_rate=4, block_layers=(1, 1), decoder_channels=(4, 8))


@pytest.mark.parametrize(
    "config, batch, size_dhw",
    [
        (DenseSharpConfig(), 2, (32, 32, 32)),  # default model, its training crop
        (DenseSharpConfig(), 2, (16, 24, 32)),  # any multiple of 8 per axis
        (TINY, 3, (8, 12, 16)),  # two dense blocks: multiples of 4
        (DenseSharpConfig(block_layers=(2,), decoder_channels=(4,), n_rating=3, n_attributes=0), 2, (6, 6, 6)),
    ],
)
def test_output_shapes(config, batch, size_dhw):
    net = DenseSharpNet(config).eval()
    with torch.no_grad():
        out = net(torch.rand(batch, 1, *size_dhw), torch.full((batch,), 7.0))
    assert tuple(out.mask_logits.shape) == (batch, 1, *size_dhw)
    assert tuple(out.malignancy_logit.shape) == (batch,)
    assert tuple(out.rating_logits.shape) == (batch, config.n_rating)
    assert tuple(out.texture_logits.shape) == (batch, config.n_texture)
    assert tuple(out.invasiveness_logits.shape) == (batch, config.n_invasiveness)
    assert tuple(out.attributes.shape) == (batch, config.n_attributes)
    assert torch.isfinite(out.mask_logits).all()


@pytest.mark.parametrize(
    "shape, diameters, message",
    [
        ((1, 32, 32, 32), [7.0], "B, C, D, H, W"),  # no batch axis
        ((2, 2, 32, 32, 32), [7.0, 7.0], "channel"),  # two channels for a one-channel model
        ((2, 1, 32, 30, 32), [7.0, 7.0], "divisible by 8"),
        ((2, 1, 32, 32, 32), None, "diameter_mm"),  # the heads need the diameter
        ((2, 1, 32, 32, 32), [7.0], "diameter_mm"),  # one per crop
        ((2, 1, 32, 32, 32), [7.0, 0.0], "> 0"),
    ],
)
def test_input_errors(shape, diameters, message):
    with pytest.raises(ValueError, match=message):
        DenseSharpNet(DenseSharpConfig())(torch.zeros(shape), None if diameters is None else torch.tensor(diameters))


def test_diameter_is_optional_without_diameter_input():
    net = DenseSharpNet(DenseSharpConfig(**{**TINY.to_dict(), "diameter_input": False})).eval()
    assert tuple(net(torch.rand(2, 1, 8, 8, 8)).malignancy_logit.shape) == (2,)


def test_diameter_reaches_the_heads():
    torch.manual_seed(0)
    net = DenseSharpNet(TINY).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    small, large = net(x, torch.tensor([4.0])), net(x, torch.tensor([20.0]))
    assert not torch.allclose(small.malignancy_logit, large.malignancy_logit)
    assert torch.allclose(small.mask_logits, large.mask_logits)  # the mask does not depend on it


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(growth_rate=0),
        dict(block_layers=()),
        dict(block_layers=(2, 0, 2)),
        dict(decoder_channels=(8, 16)),  # one per block needed
        dict(compression=0.0),
        dict(dropout=1.0),
        dict(histogram_bins=-1),
        dict(mask_prior=1.0),
    ],
)
def test_config_errors(kwargs):
    with pytest.raises(ValueError):
        DenseSharpConfig(**kwargs)


def test_config_round_trip_and_divisor():
    config = DenseSharpConfig(block_layers=(2, 3), decoder_channels=(4, 8))
    assert DenseSharpConfig(**config.to_dict()) == config
    assert config.size_divisor == 4


def test_default_model_is_small():
    net = DenseSharpNet(DenseSharpConfig())
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    assert buffer.tell() < 5 * 2**20  # well under the 20 MB budget


def test_heads_do_not_bend_the_segmentation():
    """The mask enters the heads detached: a head loss leaves the mask head's gradient at zero."""
    torch.manual_seed(0)
    net = DenseSharpNet(TINY).train()
    out = net(torch.rand(2, 1, 8, 8, 8), torch.tensor([5.0, 9.0]))
    out.texture_logits.sum().backward()
    assert net.mask_head.weight.grad is None or torch.count_nonzero(net.mask_head.weight.grad) == 0
    assert torch.count_nonzero(net.texture_head.weight.grad) > 0
    assert torch.count_nonzero(net.stem[0].weight.grad) > 0  # shared encoder learns from the heads


def test_mask_branch_gets_gradient():
    torch.manual_seed(0)
    net = DenseSharpNet(TINY).train()
    net(torch.rand(2, 1, 8, 8, 8), torch.tensor([5.0, 9.0])).mask_logits.mean().backward()
    assert torch.count_nonzero(net.mask_head.weight.grad) > 0
    assert net.texture_head.weight.grad is None


def test_malignancy_diameter_prior():
    net = DenseSharpNet(TINY).eval()
    net.set_malignancy_diameter_prior(2.0, -4.0)
    with torch.no_grad():
        net.malignancy_head.weight[0, :-1] = 0.0  # image features silent: the prior alone
        logits = net(torch.rand(2, 1, 8, 8, 8), torch.tensor([7.0, 20.0])).malignancy_logit
    torch.testing.assert_close(logits, 2.0 * torch.log(torch.tensor([7.0, 20.0])) - 4.0)
    with pytest.raises(ValueError, match="diameter_input"):
        no_diameter = DenseSharpConfig(**{**TINY.to_dict(), "diameter_input": False})
        DenseSharpNet(no_diameter).set_malignancy_diameter_prior(1.0, 0.0)


# ----------------------------------------------------------------------------------------------- LIDC attribute heads

TINY_ATTR = DenseSharpConfig(**{**TINY.to_dict(), "lidc_attribute_heads": True})


@pytest.mark.parametrize("batch, size_dhw", [(1, (8, 8, 8)), (3, (8, 12, 16))])
def test_attribute_head_shapes_and_rank_consistency(batch, size_dhw):
    torch.manual_seed(1)
    net = DenseSharpNet(TINY_ATTR).eval()
    out = net(torch.rand(batch, 1, *size_dhw), torch.full((batch,), 6.0))
    assert tuple(out.attribute_cut_logits.shape) == (batch, 4, 4)  # (B, attributes, cuts rating > 1..4)
    assert tuple(out.calcification_logits.shape) == (batch, 6)  # (B, LIDC calcification ratings 1-6)
    with torch.no_grad():
        net.ordinal_heads.cut_gaps.fill_(-5.0)  # small gaps (0.007) still keep P(rating > k) decreasing in k
        logits = net(torch.rand(batch, 1, *size_dhw), torch.full((batch,), 6.0)).attribute_cut_logits
    assert bool((logits.diff(dim=2) < 0).all())


def test_attribute_heads_are_off_for_old_configs():
    old = {k: v for k, v in TINY.to_dict().items() if k != "lidc_attribute_heads"}  # a config.json from before
    net = DenseSharpNet(DenseSharpConfig(**old)).eval()
    out = net(torch.rand(2, 1, 8, 8, 8), torch.tensor([5.0, 9.0]))
    assert out.attribute_cut_logits is None and out.calcification_logits is None
    assert net.pretrained_parameter_names() == {name for name, _ in net.named_parameters()}
    assert not any(name.startswith("ordinal_heads") for name in net.state_dict())
    with pytest.raises(ValueError, match="lidc_attribute_heads"):
        net.set_attribute_priors(torch.full((4, 4), 0.5), torch.full((6,), 1 / 6))


def test_attribute_priors_give_the_training_frequencies():
    net = DenseSharpNet(TINY_ATTR).eval()
    exceed = torch.tensor([[0.3, 0.1, 0.05, 0.02], [0.5, 0.4, 0.3, 0.2], [0.9, 0.8, 0.6, 0.3], [0.99, 0.9, 0.5, 0.2]])
    patterns = torch.tensor([0.01, 0.02, 0.12, 0.01, 0.02, 0.82])
    net.set_attribute_priors(exceed, patterns)
    with torch.no_grad():
        net.ordinal_heads.score.weight.zero_()  # image features silent: the priors alone
        net.calcification_head.weight.zero_()
        out = net(torch.rand(2, 1, 8, 8, 8), torch.tensor([5.0, 9.0]))
    torch.testing.assert_close(torch.sigmoid(out.attribute_cut_logits), exceed.expand(2, 4, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.softmax(out.calcification_logits, 1), patterns.expand(2, 6), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="shapes"):
        net.set_attribute_priors(torch.full((4, 3), 0.5), patterns)
