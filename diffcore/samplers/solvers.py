"""The adaptive Dormand-Prince solver now lives in :mod:`diffcore.odeint`, the one explicit
Runge-Kutta engine of the samplers and the likelihood; this module keeps the old import path."""

from ..odeint import DopriResult, DopriState, dopri5

__all__ = ["dopri5", "DopriResult", "DopriState"]
