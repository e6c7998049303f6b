r"""Diffusion-model sampling through the splitting core: time-dependent, learned-drift SDEs.

A score-based generative model (Song et al., ICLR 2021) noises data with a forward SDE

.. math::

    du = f(u, t)\,dt + G(t)\,dW, \qquad t \in [0, T],

and generates by integrating, from :math:`t = T` down to :math:`t = \epsilon`, the
reverse-time SDE or the probability-flow ODE, in which the score
:math:`\nabla \log p_t` of the forward marginals appears (a network in practice):

.. math::

    du = \left[f - G G^T \nabla\log p_t\right] dt + G\,d\bar W \quad(\text{reverse SDE}),\qquad
    \frac{du}{dt} = f - \tfrac12 G G^T \nabla\log p_t \quad(\text{probability flow}).

Written in the reverse time :math:`\tau = T - t` (so that every sampler runs forward in
:math:`\tau` and a step of length h takes t to t - h), the reverse drift is
:math:`-f + w\,GG^T\nabla\log p_t` with :math:`w = 1` (SDE) or :math:`w = 1/2` (ODE).

Where things live
-----------------
This module is the front of three; every name below is importable from it
(``from sdekit.diffusion import X``, ``sdekit.diffusion.X``).

* :mod:`sdekit.forward_sdes` -- the forward processes :class:`VPSDE` and :class:`CLD` with
  their :class:`LinearSchedule`, their exact transitions (closed form for VP, Van Loan for
  CLD), the exact marginals of Gaussian data (:func:`marginal`) and the scores
  (:class:`GaussianScore`, :class:`TorchScore`).
* :mod:`sdekit.reverse_samplers` -- the samplers (:class:`EulerMaruyama`,
  :class:`ProbabilityFlow`, :class:`Splitting`, :func:`SSCS`, :class:`PredictorCorrector`),
  how the splitting's sub-step times are assigned and its order, the time grid
  (:func:`time_grid`) and the driver :func:`sample`.
* :mod:`sdekit.diffusion_exact` -- the exactness harness (:func:`exact_output_moments`,
  :func:`target_moments`), the Gaussian distances (:func:`gaussian_kl`,
  :func:`gaussian_w2`, :func:`covariance_error`) and :func:`convergence_study`.

References
----------
Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon and B. Poole,
"Score-based generative modeling through stochastic differential equations",
ICLR 2021. T. Dockhorn, A. Vahdat and K. Kreis, "Score-based generative modeling with
critically-damped Langevin diffusion", ICLR 2022. P. Vincent, "A connection between
score matching and denoising autoencoders", Neural Comput. 23 (2011) (denoising score
matching). T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the design space of
diffusion-based generative models", NeurIPS 2022 (Heun's method for the ODE).
"""
from .diffusion_exact import (affine_step, convergence_study, covariance_error,  # noqa: F401
                              exact_output_moments, fit_exact_order, gaussian_kl, gaussian_w2, target_moments)
from .forward_sdes import CLD, VPSDE, GaussianScore, LinearSchedule, TorchScore, marginal  # noqa: F401
from .linear import Moments
from .reverse_samplers import (SSCS, EulerMaruyama, Letters, PredictorCorrector,  # noqa: F401
                               ProbabilityFlow, SampleResult, Splitting, sample, time_grid)

# the private helpers, where tests and users reach them (sdekit.diffusion._van_loan, ...)
from .diffusion_exact import _gauss  # noqa: F401
from .forward_sdes import (_LYAP, _blocks, _cat, _check_sde, _chol2, _data_law, _expm2,  # noqa: F401
                           _van_loan, _van_loan_expm)
from .reverse_samplers import _check_sampler, _Sampler  # noqa: F401

__all__ = ["LinearSchedule", "VPSDE", "CLD", "GaussianScore", "TorchScore",
           "EulerMaruyama", "ProbabilityFlow", "Splitting", "PredictorCorrector", "SSCS",
           "time_grid", "sample", "exact_output_moments", "target_moments",
           "gaussian_kl", "gaussian_w2", "covariance_error", "convergence_study", "fit_exact_order",
           "Moments"]
