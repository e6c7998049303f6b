r"""Torch modules as systems: :func:`torch_module` (a learned force, gradient or potential)
and the batched evaluation it shares with :mod:`sdekit.forward_sdes` and :mod:`sdekit.bridges`
(:func:`evaluate_module`, :func:`module_placement`).

A :class:`TorchModule` has no compiled ``gradient`` (``numpy_only = True``), so only the
numpy backend runs it. torch is imported only when one is made or evaluated (inside the
functions), so importing this module does not import torch. Every public name here is
also in :mod:`sdekit.systems` (the other systems; the base class is in
:mod:`sdekit.system_base`).
"""
import itertools

import numpy as np

from ._checks import choice, integer
from .system_base import System, _known_values


MODULE_OUTPUTS = ("force", "gradient", "potential")


def module_placement(module, dtype=None, device=None):
    """(dtype, device) to evaluate ``module`` in: the given ones, else those of its first
    parameter or buffer (float64 on the cpu for a module with neither)."""
    import torch

    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    if dtype is None:
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float64
    elif not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: must be a floating-point torch.dtype, got {dtype!r}")
    if device is None:
        return dtype, first.device if first is not None else torch.device("cpu")
    try:
        return dtype, torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: must name a torch device, got {device!r}") from err


def _rows(name, y, x, width):
    """The module's output ``y`` for the batch ``x`` as (b, width) rows (ValueError naming ``name``
    otherwise; a (b,) output counts as one column)."""
    import torch

    b = x.shape[0]
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name}: must return a torch.Tensor, got {type(y).__name__}")
    if width == 1 and tuple(y.shape) == (b,):
        y = y.reshape(b, 1)
    if y.ndim != 2 or y.shape[0] != b or (width is not None and y.shape[1] != width):
        raise ValueError(f"{name}: returned shape {tuple(y.shape)} for a batch of shape {tuple(x.shape)}, "
                         f"expected ({b}, {'k' if width is None else width})")
    return y


def evaluate_module(module, x, t=None, *, batch_size=65536, dtype=None, device=None, width=None,
                    differentiate=False, name="module"):
    r"""Rows of ``module(x)``, or ``module(x, t)``, evaluated in batches (no autograd graph kept).

    ``x`` (n, k) goes to the module ``batch_size`` rows at a time, as a (b, k) tensor of
    ``dtype`` on ``device`` (default: those of the module, :func:`module_placement`) and,
    if ``t`` is given, with the time as a (b, 1) tensor filled with t. The output is
    computed under ``torch.no_grad``; with ``differentiate=True`` the module gives one
    number U per row and the result is :math:`\nabla_x U` by autograd (row by row, as
    the rows are independent: :math:`\nabla_x \sum_i U(x_i) = (\nabla U(x_i))_i`).

    Returns
    -------
    (n, width) float64 array; ``width`` (None: any, the same for every batch) is checked
    (ValueError naming ``name``); with ``differentiate`` it is k.
    """
    import torch

    dtype, device = module_placement(module, dtype, device)
    x = np.asarray(x)
    out = np.empty((0, x.shape[1] if differentiate or width is None else width))
    for i in range(0, x.shape[0], batch_size):
        xb = torch.tensor(x[i:i + batch_size], dtype=dtype, device=device)  # a copy: the paths stay safe
        args = (xb,) if t is None else (xb, torch.full((xb.shape[0], 1), float(t), dtype=dtype, device=device))
        if differentiate:
            with torch.enable_grad():
                xb.requires_grad_(True)
                U = _rows(name, module(*args), xb, 1)
                yb = torch.autograd.grad(U.sum(), xb)[0]
        else:
            with torch.no_grad():
                yb = _rows(name, module(*args), xb, width)
        if i == 0:
            width = yb.shape[1]  # the later batches must match the first
            out = np.empty((x.shape[0], width))
        out[i:i + xb.shape[0]] = yb.detach().to("cpu", torch.float64).numpy()
    return out


class TorchModule(System):
    """A torch module as the force, the gradient or the potential: see :func:`torch_module`."""

    numpy_only = True

    def __init__(self, module, dim, output="force", time_dependent=False, batch_size=65536,
                 device=None, dtype=None, exact=None, name=None):
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"module: must be a torch.nn.Module, got {module!r}")
        if not isinstance(time_dependent, bool):
            raise ValueError(f"time_dependent: must be True or False, got {time_dependent!r}")
        self.module = module
        self.dim = integer("dim", dim, low=1)
        self.output = choice("output", output, MODULE_OUTPUTS)
        self.time_dependent = time_dependent
        self.batch_size = integer("batch_size", batch_size, low=1)
        self.dtype, self.device = module_placement(module, dtype, device)
        self._exact = dict(exact or {})
        self.name = name or (f"torch_module({type(module).__name__}, dim={self.dim}, output={output!r}"
                             f"{', time_dependent=True' if time_dependent else ''})")

    def _evaluate(self, q, t, differentiate):
        """The module's rows on the configurations q (..., dim), at time t if time-dependent."""
        t = self._time(t)
        q = np.asarray(q)
        if q.ndim == 0 or q.shape[-1] != self.dim:
            raise ValueError(f"q: must have shape (..., {self.dim}), got {q.shape}")
        width = 1 if self.output == "potential" and not differentiate else self.dim
        return evaluate_module(self.module, np.ascontiguousarray(q.reshape(-1, self.dim)), *t,
                               batch_size=self.batch_size, dtype=self.dtype, device=self.device,
                               width=width, differentiate=differentiate, name="module")

    def grad(self, q, *t):
        r""":math:`\nabla U(q)` (or :math:`\nabla_q U(q, t)`): minus the module's output for
        ``output="force"``, the output for ``"gradient"``, its autograd gradient for ``"potential"``."""
        rows = self._evaluate(q, t, differentiate=self.output == "potential")
        return (-rows if self.output == "force" else rows).reshape(np.shape(q))

    def potential(self, q, *t):
        if self.output != "potential":
            raise ValueError(f"potential: {self.name} gives the {self.output}, not the potential")
        return self._evaluate(q, t, differentiate=False)[:, 0].reshape(np.shape(q)[:-1])

    def _exact_positions(self, kT):
        return _known_values(self._exact, kT)


def torch_module(module, dim, *, output="force", time_dependent=False, batch_size=65536,
                 device=None, dtype=None, exact=None, name=None):
    r"""A torch module (a drift or score network, or a learned potential) as a system.

    The numpy backend evaluates it on all paths at once, ``batch_size`` rows at a time,
    under ``torch.no_grad``; the compiled backends cannot (``numpy_only``: ``simulate``
    and ``ensemble`` pick the numpy backend and refuse ``backend="cpu"`` or ``"cuda"``).
    torch is imported only here.

    Parameters
    ----------
    module : torch.nn.Module
        ``module(q)`` on a (b, dim) tensor, or ``module(q, t)`` with the time t as a
        (b, 1) tensor if ``time_dependent`` (the convention of score networks, as in
        :class:`sdekit.diffusion.TorchScore`). Put it in eval mode first if it has
        dropout or batch normalization.
    dim : int
        Number of coordinates.
    output : {"force", "gradient", "potential"}
        What the module returns: the force :math:`F = -\nabla U` (b, dim); the
        gradient :math:`\nabla U` (b, dim); or the potential U, (b,) or (b, 1), whose
        force :math:`-\nabla U` is then taken by autograd. A score network
        :math:`s \approx \nabla\log\rho` of the target :math:`\rho \propto e^{-U/k_BT}`
        gives the force :math:`k_BT\,s`.
    time_dependent : bool
        The module takes (q, t); the schemes evaluate it at each letter's clock time
        (:attr:`sdekit.schemes.Scheme.substep_times`).
    batch_size : int
        Rows per module call (memory); the result does not depend on it.
    device, dtype : torch.device or str, torch.dtype, optional
        Device and precision of the tensors given to the module (default: those of its
        first parameter; float64 on the cpu for a module without parameters); the module
        must accept them (move or convert it first: it is not changed here). The paths
        stay numpy arrays of the run's dtype; the output is converted back to float64.
    exact : dict, optional
        Known stationary expectations, ``{"q2": array or callable(kT)}`` (as in :func:`custom`).
    name : str, optional
        Used in repr and in checkpoints (default from the module's class).

    References
    ----------
    Y. Song et al., "Score-based generative modeling through stochastic differential
    equations", ICLR 2021 (a network as the drift of a Langevin-type SDE).

    Examples
    --------
    A linear layer as the harmonic force :math:`F(q) = -\omega^2 q`, :math:`\omega^2 = 2`:

    >>> import torch, sdekit
    >>> layer = torch.nn.Linear(1, 1, bias=False, dtype=torch.float64)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(-2.0)
    >>> oscillator = torch_module(layer, dim=1, exact={"q2": lambda kT: [kT / 2.0]})
    >>> oscillator.force(np.array([[0.5], [1.0]]))
    array([[-1.],
           [-2.]])
    >>> ens = sdekit.ensemble("BAOAB", oscillator, h=0.2, n_steps=10, n_paths=100, seed=1)
    >>> ens.spec.system is oscillator, ens.state.backend
    (True, 'numpy')
    """
    return TorchModule(module, dim, output, time_dependent, batch_size, device, dtype, exact, name)
