"""The trunk's feed-forward choice: SwiGLU (LLaMA's, the default) or the GPT-2 / ViT GELU MLP (MAR's blocks)."""

import torch

from umm.nn import Layout, Transformer, TransformerConfig
from umm.nn.mlp import GELUFeedForward, SwiGLU


def test_gelu_mlp_is_the_vit_feed_forward_at_the_swiglus_size_and_trains():
    swiglu = Transformer(TransformerConfig(dim=64, depth=2, heads=2))
    gelu = Transformer(TransformerConfig(dim=64, depth=2, heads=2, mlp="gelu"))
    assert isinstance(swiglu.blocks[0].mlp, SwiGLU) and isinstance(gelu.blocks[0].mlp, GELUFeedForward)
    assert gelu.blocks[0].mlp.up.out_features == 4 * 64  # MAR / ViT: hidden = 4 * dim
    sizes = [sum(p.numel() for p in m.parameters()) for m in (swiglu, gelu)]
    assert abs(sizes[0] - sizes[1]) / sizes[0] < 0.03  # SwiGLU rounds 8/3 * dim up to a multiple of 16
    # the residual projection keeps the GPT-2 depth-scaled init the SwiGLU's gets
    assert gelu.blocks[0].mlp.down.weight.std() < 0.6 * gelu.blocks[0].mlp.up.weight.std()
    # the block computes x + down(gelu(up(norm(x)))) after attention, and a few steps fit a target
    torch.manual_seed(0)
    x, target = torch.randn(4, 8, 64), torch.randn(4, 8, 64)
    layout = Layout(torch.full((4, 8), -1), torch.arange(8)[None, :, None].expand(4, 8, 1), torch.ones(4, 8, dtype=torch.bool),
                    torch.full((4, 1), 8))
    optimizer = torch.optim.Adam(gelu.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (gelu(x, layout) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
