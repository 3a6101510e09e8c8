"""Noise processes shared by training and sampling."""

from umm.paths.gaussian import GaussianPath, Parameterization, Schedule

__all__ = ["GaussianPath", "Parameterization", "Schedule"]
