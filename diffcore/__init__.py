"""diffcore: denoising diffusion and score-based generative models, written once against the
Python Array API standard and run on NumPy, array-api-strict, PyTorch and JAX.

``import diffcore`` imports no framework: backends are loaded only by :func:`diffcore.backend`.
"""

from . import analytic, autodiff, likelihood, losses, models, parametrization, samplers, score_matching, sde
from .likelihood import LikelihoodResult, nll, ode_likelihood, vlb_bpd
from .samplers import SampleResult, Sampler, build as build_sampler, sample
from .models import Model
from ._cache import clear_cache
from .backends import Backend, LoopError, NumPyBackend, StepBudgetExceeded, available_backends, backend, backend_for
from .diffusion import GaussianDiffusion, PMeanVariance
from .sde import VESDE, VPSDE, subVPSDE
from .flow import RectifiedFlow
from .process import Process, marginal_coefficients, marginal_sample
from .schedules import (
    betas_for_alpha_bar,
    get_named_beta_schedule,
    karras_sigmas,
    ncsn_sigmas,
    rescale_zero_terminal_snr,
    respace_betas,
    respaced_timesteps,
    space_timesteps,
)
from .timestep_sampler import (
    LossSecondMomentResampler,
    TimestepSampler,
    UniformSampler,
    create_named_schedule_sampler,
)

__version__ = "0.1.0"
