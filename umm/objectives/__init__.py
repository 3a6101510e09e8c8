"""Objectives: functions from model outputs and targets to scalar losses (systems name them ``*_loss``)."""

from umm.objectives.diffusion import diffusion_loss
from umm.objectives.next_token import IGNORE, next_token_loss, shift_targets, split_cross_entropy, z_loss

__all__ = ["IGNORE", "diffusion_loss", "next_token_loss", "shift_targets", "split_cross_entropy", "z_loss"]
