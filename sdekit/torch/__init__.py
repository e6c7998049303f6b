r"""The autograd adapter: splitting schemes as a ``torch.optim.Optimizer``.

:class:`SDEOptimizer` runs any splitting word of :mod:`sdekit.schemes` on the
parameters of a network, treating the parameters as positions q, keeping momenta p
(unit mass) and, for words with a D letter, one thermostat variable xi per tensor.
The force is minus the (mini-batch) gradient of the loss, so a stochastic gradient
is the force of the SDE

.. math::

    dq = p\,dt, \qquad
    dp = -\nabla L(q)\,dt - (\gamma + \xi) p\,dt + \sigma\,dW, \qquad
    d\xi = \varepsilon\,(p^T p - N k_BT)\,dt,

with :math:`\sigma = \sqrt{2\gamma k_BT}` unless a driving noise :math:`\sigma_A`
is set. Each parameter group has its own word and its own h (``lr``), gamma, kT,
eps, sigma_A; the groups share one gradient evaluation per step (lazy force). The
presets :class:`AdLaLa`, :class:`LOL`, :class:`MultiLayerLangevin`, :class:`SGLD`
and :class:`ConstrainedSGLD` are thin constructors over :class:`SDEOptimizer`.

A group may also keep its tensors on a manifold (``constraint=``: the core's
:class:`~sdekit.constraints.Circle`, :class:`~sdekit.constraints.Stiefel` or
:class:`~sdekit.constraints.Sphere`, through their tensor forms in
:mod:`sdekit.torch.manifolds`), read the gradient only every k-th step (``rate=k``,
multirate training, by default the published rule of Vlaar & Leimkuhler), and take gamma
and kT as functions of the time t (:attr:`SDEOptimizer.time`).

``lr`` is the SDE step h everywhere (SGLD and ConstrainedSGLD excepted, whose ``lr`` is
SGLD's learning rate): BAOAB at kT = 0 with step h and friction gamma is heavy-ball SGD
with learning rate :math:`h^2(1 + e^{-\gamma h})/2` and momentum :math:`e^{-\gamma h}`
(:func:`sgd_equivalent`), so BAOAB at lr = 0.1, gamma = 1 is SGD at lr 0.0095, momentum 0.905.

What a letter does to a parameter group is its :meth:`~sdekit.letters.Letter.torch`
hook, in its module of :mod:`sdekit.letters` (A: ``drift``, B: ``kick``, O: ``ou``,
D: ``thermostat``, EM/LM: ``overdamped``), which sees the group through a
:class:`Letters` context; the hooks take their coefficients from :mod:`sdekit.operators`
(``ou_coefficients`` for O, ``thermostat`` for D, and the affine maps
``drift``/``kick``/``euler_maruyama``/``leimkuhler_matthews`` evaluated at unit
arguments for the rest) and apply them in place with ``torch._foreach_*`` ops. A
registered letter with a ``torch`` hook runs here too; a word with a letter that has
none is refused when the group is added.

The package:

================== ==========================================================================
``layout``         words cut at their force letters, multirate placement, alignment of groups
``settings``       a group's settings checked when it is added (:func:`layers` too)
``manifolds``      the tensor forms of the core's constraints (SHAKE, RATTLE, geodesic drifts)
``context``        :class:`Letters`, what a hook sees; ``GroupCache``, a group's buffers
``stepping``       one step: the words side by side, shared lazy force evaluations
``noise``          where the normals come from: the Philox stream (CPU default) or torch's
                   generator (drawn when asked, or prefetched)
``philox_normals`` the Philox4x32-10 normals in parallel into a tensor, and the fused O update
``checkpoint``     the state dict (tensors, numbers and strings only)
``optimizer``      :class:`SDEOptimizer`
``presets``        :class:`AdLaLa`, :class:`LOL`, :class:`MultiLayerLangevin`, :class:`SGLD`,
                   :class:`ConstrainedSGLD`, :func:`sgd_equivalent`
================== ==========================================================================

References
----------
B. Leimkuhler, T. Matthews and T. Vlaar, "Partitioned integrators for thermodynamic
parameterization of neural networks", Foundations of Data Science 1 (2019) 457-489,
arXiv:1908.11843 (AdLaLa, LOL, multi-layer Langevin). B. Leimkuhler and C. Matthews,
Appl. Math. Res. Express 2013 (BAOAB). B. Leimkuhler and X. Shang, SIAM J. Sci.
Comput. 38 (2016) A712 (adaptive Langevin, BADODAB). B. Leimkuhler, T. Pouchon and
T. Vlaar, "Better training using weight-constrained stochastic dynamics", ICML 2021
(constraints). T. Vlaar and B. Leimkuhler, "Multirate training of neural networks",
ICML 2022 (multirate).
"""
import torch

from .. import operators as ops
from .._checks import DivergenceError  # noqa: F401  (names the single module sdekit/torch.py had)
from ..constraints import Manifold  # noqa: F401
from ..schemes import Scheme  # noqa: F401
from .context import GroupCache, Letters
from .layout import MULTIRATE_RULES
from .manifolds import tensor_form
from .optimizer import SDEOptimizer
from .presets import LOL, SGLD, AdLaLa, ConstrainedSGLD, MultiLayerLangevin, sgd_equivalent
from .settings import layers

__all__ = ["SDEOptimizer", "AdLaLa", "LOL", "MultiLayerLangevin", "SGLD", "ConstrainedSGLD",
           "sgd_equivalent", "layers", "Letters", "GroupCache", "MULTIRATE_RULES", "tensor_form"]

_tops = ops.bind(torch.exp, torch.expm1, torch.sqrt, torch.log)
"""The operators on tensors (for the thermostatted O, whose friction gamma + xi is a tensor).
The hooks read ``ops`` and ``_tops`` from here at every step (:class:`Letters`), so that the
test harness can swap them."""
