"""Standalone samplers: diffusion (DDPM, DDIM, DPM-Solver++(2M), Euler, Heun), guidance, AR decoding, MaskGIT."""

from umm.samplers.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler, network_evaluations
from umm.samplers.guidance import cfg, linear_cfg_scale, muse_cfg, three_way_cfg
from umm.samplers.maskgit import annealed_choice_temperature, mask_schedule, maskgit_step

__all__ = [
    "DDIMSampler", "DDPMSampler", "DPMSolverSampler", "EulerSampler", "HeunSampler", "annealed_choice_temperature", "cfg",
    "linear_cfg_scale", "mask_schedule", "maskgit_step", "muse_cfg", "network_evaluations", "three_way_cfg",
]
