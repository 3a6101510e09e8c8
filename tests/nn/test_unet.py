"""The U-Net patchifier's blocks must see their condition (the diffusion time): a block whose output does
not depend on it is blind to the noise level (the bug DDPM-style bias-before-GroupNorm had at 32 channels)."""

import torch

from umm.nn.unet import ResBlock, UNetDecoder, UNetEncoder


def _train_a_little(module, make_loss, steps=12):
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        make_loss().backward()
        opt.step()


def test_resblock_output_depends_on_condition_at_every_width():
    torch.manual_seed(0)
    for channels in (32, 64, 128):  # 32 channels: one channel per GroupNorm group, where a bias vanished exactly
        block = ResBlock(channels, 16)
        x = torch.randn(4, channels, 6, 6)
        cond = torch.randn(4, 16)
        target = torch.randn(4, channels, 6, 6) * cond[:, :1, None, None]  # depends on the condition
        _train_a_little(block, lambda: (block(x, cond) - target).pow(2).mean())
        other = cond.roll(1, dims=0)
        change = (block(x, cond) - block(x, other)).abs().mean()
        assert change > 1e-3, f"width {channels}: the condition does not change the block's output ({change:.2e})"
        assert sum(p.abs().sum() for n, p in block.named_parameters() if "film" in n or "time" in n) > 0.1, f"width {channels}: the conditioning weight did not learn"


def test_unet_tokens_and_pixels_depend_on_time():
    torch.manual_seed(0)
    enc, dec = UNetEncoder(3, 32, levels=2, width=32, time_dim=16), UNetDecoder(3, 32, levels=2, width=32, time_dim=16)
    images, time = torch.randn(4, 3, 16, 16), torch.randn(4, 16)
    target = images * time[:, :1, None, None]
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(12):
        tokens, skips = enc(images, time)
        loss = (dec(tokens, skips, time) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tokens_a, skips_a = enc(images, time)
        tokens_b, skips_b = enc(images, time.roll(1, dims=0))
        assert (tokens_a - tokens_b).abs().mean() > 1e-4
        assert (dec(tokens_a, skips_a, time) - dec(tokens_a, skips_a, time.roll(1, dims=0))).abs().mean() > 1e-4


def test_more_blocks_a_level_add_resblocks_and_keep_one_block_names():
    torch.manual_seed(0)
    one, two = UNetEncoder(12, 32, 2, 8, 16), UNetEncoder(12, 32, 2, 8, 16, blocks=2)
    names_one = {n for n, _ in one.named_parameters()}
    names_two = {n for n, _ in two.named_parameters()}
    assert names_one < names_two and all(".more." in "." + n or n.startswith("more.") for n in names_two - names_one)
    assert sum(1 for m in two.modules() if isinstance(m, ResBlock)) == 6  # 3 levels x 2
    decoder = UNetDecoder(12, 32, 2, 8, 16, blocks=2)
    x, time = torch.randn(2, 12, 24, 24), torch.randn(2, 16)
    tokens, skips = two(x, time)
    assert tokens.shape == (2, 36, 32) and decoder(tokens, skips, time).shape == (2, 12, 24, 24)
    # the extra blocks are in the path: changing one changes the tokens
    before = tokens.detach().clone()
    with torch.no_grad():
        for p in two.more[1][0].parameters():  # every weight: a zero-initialised output conv hides the rest
            p.add_(0.5)
    assert not torch.allclose(two(x, time)[0], before)


def test_decoder_text_attention_reads_the_text_and_only_the_unmasked_part():
    """unet_text_attn: the decoder's coarsest levels learn to draw what the text says; masked keys are never read,
    and a decoder without text attention keeps its parameter names (saved one-block models load unchanged)."""
    torch.manual_seed(0)
    plain = UNetDecoder(3, 32, levels=2, width=16, time_dim=16)
    dec = UNetDecoder(3, 32, levels=2, width=16, time_dim=16, text_attn=2)
    assert {n for n, _ in plain.named_parameters()} < {n for n, _ in dec.named_parameters()}
    tokens, skips = torch.randn(4, 16, 32), [torch.randn(4, 16, 16, 16), torch.randn(4, 32, 8, 8), torch.randn(4, 64, 4, 4)]
    time = torch.randn(4, 16)
    text, mask = torch.randn(4, 5, 32), torch.ones(4, 5, dtype=torch.bool)
    target = text[:, 0, :3, None, None].expand(4, 3, 16, 16)  # the pixels say what the first text state says
    _train_a_little(dec, lambda: (dec(tokens, skips, time, (text, mask)) - target).pow(2).mean(), steps=40)
    with torch.no_grad():
        out = dec(tokens, skips, time, (text, mask))
        assert (out - dec(tokens, skips, time, (text.roll(1, dims=0), mask))).abs().mean() > 1e-2
        hidden = mask.clone()
        hidden[:, 3:] = False
        noise = text.clone()
        noise[:, 3:] = torch.randn(4, 2, 32) * 10  # only masked keys change
        assert torch.allclose(dec(tokens, skips, time, (text, hidden)), dec(tokens, skips, time, (noise, hidden)), atol=1e-5)
        none = torch.zeros_like(mask)  # no text at all: the null key keeps the output finite
        assert torch.isfinite(dec(tokens, skips, time, (text, none))).all()
