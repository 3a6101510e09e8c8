"""The shared image way in and out of Transfusion and MonoFormer (umm/nn/patch_io.py)."""

import pytest
import torch

from umm.config import ConfigError
from umm.nn.patch_io import PatchIO, PooledText, rename_legacy_keys


@pytest.mark.parametrize("unet,fold", [(False, 1), (True, 1), (True, 2)])
def test_embed_and_project_keep_the_token_grid(unet, fold):
    io = PatchIO(3, 16, 4, 32, unet=True, unet_width=8, unet_fold=fold) if unet else PatchIO(3, 16, 4, 32)
    patches, cond = torch.randn(2, 16, 48), torch.randn(2, 32)  # (I, N, P), (I, D)
    tokens, skips = io.embed(patches, cond)
    assert tokens.shape == (2, 16, 32) and (skips is None) == (not unet)
    assert io.project(tokens, skips, cond).shape == (2, 16, 48)


def test_unet_output_depends_on_the_condition():
    """The U-Net's ResBlocks read the condition (time + pooled text): changing it changes the output."""
    torch.manual_seed(0)
    io = PatchIO(3, 16, 4, 32, unet=True, unet_width=8)
    for p in io.parameters():  # leave the zero init: an untrained block is the identity and cannot show it
        torch.nn.init.normal_(p, std=0.2)
    patches = torch.randn(1, 16, 48)
    outs = []
    for cond in (torch.zeros(1, 32), torch.ones(1, 32)):
        tokens, skips = io.embed(patches, cond)
        outs.append(io.project(tokens, skips, cond))
    assert (outs[0] - outs[1]).abs().mean() > 1e-2


def test_bad_fold_names_the_key():
    with pytest.raises(ConfigError, match="unet_fold"):
        PatchIO(3, 16, 4, 32, unet=True, unet_fold=3)


def test_unet_options_without_the_unet_are_refused():
    with pytest.raises(ConfigError, match="unet=true"):
        PatchIO(3, 16, 4, 32, unet=False, unet_blocks=2)


def test_pooled_text_mean_carries_over_the_cache():
    """The running mean over text slots equals the mean over the whole sequence when the prefix is cached."""
    from umm.nn import KVCache

    x, is_text = torch.randn(2, 6, 8), torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    full = PooledText.mean_before(x, is_text)
    cache = KVCache(depth=1, batch=2, max_len=6)
    PooledText.mean_before(x[:, :4], is_text[:, :4], cache, commit=True)
    rest = PooledText.mean_before(x[:, 4:], is_text[:, 4:], cache, commit=False)
    assert torch.allclose(rest, full[:, 4:], atol=1e-6)


def test_checkpoints_saved_before_the_shared_modules_load():
    """Keys of weights saved when the modules lived on the model itself are renamed on load."""
    state = {"m.unet_in.stem.weight": 1, "m.patch_out.bias": 2, "m.text_pool.0.weight": 3, "m.trunk.x": 4,
             "m.image_io.unet_out.out.bias": 5}
    rename_legacy_keys(state, "m.")
    assert state == {"m.image_io.unet_in.stem.weight": 1, "m.image_io.patch_out.bias": 2,
                     "m.text_pool.mlp.0.weight": 3, "m.trunk.x": 4, "m.image_io.unet_out.out.bias": 5}


def test_text_attention_on_more_levels_than_the_unet_has_names_the_key_and_the_range():
    with pytest.raises(ConfigError, match=r"unet_text_attn=4.*allowed 0\.\.3"):
        PatchIO(3, 16, 4, 32, unet=True, unet_text_attn=4)  # patch 4, fold 1: three levels
    with pytest.raises(ConfigError, match="unet=true"):
        PatchIO(3, 16, 4, 32, unet=False, unet_text_attn=1)
