"""Standalone samplers: diffusion (DDPM, DDIM, Euler, Heun), guidance, AR decoding, MaskGIT."""

from umm.samplers.diffusion import DDIMSampler, DDPMSampler, EulerSampler, HeunSampler, network_evaluations
from umm.samplers.guidance import cfg, linear_cfg_scale, muse_cfg, three_way_cfg

__all__ = [
    "DDIMSampler", "DDPMSampler", "EulerSampler", "HeunSampler", "cfg", "linear_cfg_scale", "muse_cfg",
    "network_evaluations", "three_way_cfg",
]
