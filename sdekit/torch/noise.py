r"""Where a step's standard normals come from: the project's Philox stream, or torch's generator.

Every O letter of a group draws one flat buffer of standard normals
(:meth:`~sdekit.torch.context.Letters.normals`) from the optimizer's noise source, one of:

* :class:`Philox` (``noise="philox"``, the default on the CPU): counter-based Philox4x32-10
  normals written in parallel straight into the buffer (:mod:`sdekit.torch.philox_normals`,
  whose docstring gives the counter layout); number i of the optimizer's draw d is a pure
  function of (seed, d, i), so the run does not depend on the number of threads.
* :class:`Direct` (``noise="torch"``, the default on other devices and with
  ``generator=``): one ``normal_`` from the optimizer's ``torch.Generator`` per draw, the
  stream of sdekit before issue 17. On a CPU that generator is serial and costs a few ns
  per number, a large part of a step of a big network (``benchmarks/RESULTS_torch.md``).
* :class:`Prefetch` (``noise="torch", prefetch_noise=True``) draws the numbers the next
  letters will ask for in a background thread while the closure (forward and backward)
  runs.

The prefetch draws from the same generator, in the
same order and in buffers of the same sizes, so every letter receives **the same numbers
bit for bit** as without it: the stream is a function of the sequence of draw sizes only.
The sequence is predicted from the previous step (the draws that followed the same point
of the step) and checked when a letter asks: a draw for other tensors than predicted
rewinds the generator to the state before the first unused prefetched draw and draws
directly (so a multirate block whose steps differ is still exact, only not faster).
"""
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from . import philox_normals

__all__ = ["Philox", "Direct", "Prefetch", "ou_update"]

_PHILOX_DTYPES = (torch.float32, torch.float64)


def ou_update(source, cache, moms, c, s):
    """The O update ``moms = c moms + s R`` with torch's ops, R from ``source.draw``: c, s numbers
    (no multiplication when c == 1, no draw when s == 0) or lists of 0-d tensors (one per
    tensor; then R is drawn before the multiplication)."""
    if isinstance(c, list):
        noise = source.draw(cache, moms)
        torch._foreach_mul_(moms, c)
        torch._foreach_addcmul_(moms, noise, s)
        return
    if c != 1.0:
        torch._foreach_mul_(moms, c)
    if s != 0.0:
        torch._foreach_add_(moms, source.draw(cache, moms), alpha=s)


class _Source:
    """What every noise source does unless it says otherwise: the O update with torch's ops
    (:func:`ou_update` on its :meth:`draw`), and nothing before a closure, at a step's end or
    to discard (nothing is drawn ahead)."""

    def ou(self, cache, moms, c, s):
        """``moms = c moms + s R`` with torch's ops (:func:`ou_update`)."""
        ou_update(self, cache, moms, c, s)

    def before_closure(self):
        """Called before each closure call (nothing to do)."""

    def end_step(self):
        """Called at the end of each step (nothing to do)."""

    def discard(self):
        """Forget anything drawn ahead (nothing here)."""


class Philox(_Source):
    """The project's Philox4x32-10 stream (:mod:`sdekit.torch.philox_normals`), keyed by the seed.

    Parameters
    ----------
    seed : int
        0 <= seed < 2**64: the Philox key (low and high 32 bits).

    Attributes
    ----------
    key : tuple of int
        The two 32-bit key words.
    draws : int
        The number of draws made (the next draw's counter d).
    """

    kind = "philox"
    generator = None

    def __init__(self, seed):
        self.key = (seed & 0xFFFFFFFF, seed >> 32)
        self.draws = 0

    def draw(self, cache, tensors):
        """Fill the group's flat buffer with draw :attr:`draws` (float32 or float64 buffers in
        place, others through a float32 copy) using torch's intra-op thread count."""
        buf, views = cache.noise_for(tensors)
        d, self.draws = self.draws, self.draws + 1
        threads = torch.get_num_threads()
        if buf.dtype in _PHILOX_DTYPES:
            philox_normals.fill(buf.numpy(), self.key, d, threads)
        else:
            scratch = torch.empty(buf.numel(), dtype=torch.float32)
            philox_normals.fill(scratch.numpy(), self.key, d, threads)
            buf.copy_(scratch)
        return views

    def ou(self, cache, moms, c, s):
        """``moms = c moms + s R`` (see :func:`ou_update`), fused with the draw: each tensor's
        numbers are made in its update's loop (contiguous float32/float64 CPU tensors; others
        get the buffer of :meth:`draw` and torch's ops)."""
        per_tensor = isinstance(c, list)
        if not per_tensor and s == 0.0:
            ou_update(self, cache, moms, c, s)
            return
        if not all(p.dtype in _PHILOX_DTYPES and p.device.type == "cpu" and p.is_contiguous() for p in moms):
            ou_update(self, cache, moms, c, s)
            return
        d, self.draws = self.draws, self.draws + 1
        threads, start = torch.get_num_threads(), 0
        for k, p in enumerate(moms):
            ck, sk = (float(c[k]), float(s[k])) if per_tensor else (c, s)
            philox_normals.ou(p.view(-1).numpy(), ck, sk, self.key, d, threads, start)
            start += p.numel()


    def generator_state(self):
        """The state as an int64 tensor: (key word 0, key word 1, draws)."""
        return torch.tensor([self.key[0], self.key[1], self.draws], dtype=torch.int64)

    def check_state(self, state):
        """ValueError unless ``state`` is a :meth:`generator_state` of this kind of noise."""
        if state.dtype != torch.int64 or tuple(state.shape) != (3,):
            raise ValueError(f"noise: the state dict's generator state ({state.dtype}, shape {tuple(state.shape)}) "
                             f"is not noise='philox''s (int64, shape (3,)); it was saved with noise='torch': "
                             f"construct the optimizer with noise='torch' to continue it")
        k0, k1, d = (int(v) for v in state)
        if not (0 <= k0 < 2**32 and 0 <= k1 < 2**32 and d >= 0):
            raise ValueError(f"noise: invalid Philox state {state.tolist()}")

    def set_state(self, state):
        """Continue from :meth:`generator_state`'s tensor (checked by :meth:`check_state`)."""
        self.check_state(state)
        k0, k1, d = (int(v) for v in state)
        self.key, self.draws = (k0, k1), d



class Direct(_Source):
    """Draw when asked: one ``normal_`` of the optimizer's ``torch.Generator`` on the group's
    flat buffer (``noise="torch"``)."""

    kind = "torch"

    def __init__(self, generator):
        self.generator = generator

    def draw(self, cache, tensors):
        """One ``normal_`` on the group's flat buffer; returns its views shaped as ``tensors``."""
        buf, views = cache.noise_for(tensors)
        buf.normal_(generator=self.generator)
        return views


    def generator_state(self):
        """The generator's state as the next draw will find it."""
        return self.generator.get_state()

    def check_state(self, state):
        """ValueError unless ``state`` is a torch.Generator's state (not a Philox one)."""
        if state.dtype != torch.uint8:
            raise ValueError(f"noise: the state dict's generator state ({state.dtype}, shape {tuple(state.shape)}) "
                             f"is noise='philox''s, not a torch.Generator's: construct the optimizer with "
                             f"noise='philox' (and no generator=) to continue it")

    def set_state(self, state):
        """Continue from a :meth:`generator_state` (checked by :meth:`check_state`); what was
        drawn ahead is forgotten."""
        self.check_state(state)
        self.discard()
        self.generator.set_state(state)



class Prefetch(Direct):
    """Draw the predicted next normals in a background thread while the closure runs.

    Each prefetched draw keeps the generator state from before it, so that a prediction that
    turns out wrong, a state dict or a load rewinds the generator exactly. ``hits`` and
    ``rewinds`` count the draws served from the prefetch and the mispredictions."""

    def __init__(self, generator):
        super().__init__(generator)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdekit-noise")
        weakref.finalize(self, self._pool.shutdown, wait=False)     # the thread ends with the optimizer
        self._pending = None        # the future of the running prefetch
        self._ready = []            # [(key, state before, buffer, views)], in draw order
        self._buffers = {}          # (position, key) -> (buffer, views), reused from step to step
        self._last, self._now = [], []    # the previous and this step's draws: [(key, tensors)]
        self.hits = self.rewinds = 0

    def _wait(self):
        """Wait for the running prefetch; its draws become :attr:`_ready` (its errors are raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._ready = pending.result()

    def draw(self, cache, tensors):
        key = tuple(id(p) for p in tensors)
        self._now.append((key, tensors))
        self._wait()
        if self._ready:
            k, state, _, views = self._ready[0]
            if k == key:
                self._ready.pop(0)
                self.hits += 1
                return views
            self.generator.set_state(state)     # mispredicted: back to before the first unused draw
            self._ready = []
            self.rewinds += 1
        return super().draw(cache, tensors)

    def before_closure(self):
        """Start drawing the predicted next draws: those of the previous step that came after
        as many draws as this step has made so far, then the previous step's first ones."""
        if self._pending is not None or self._ready or not self._last:
            return
        i = len(self._now) % len(self._last)
        plan = self._last[i:] + self._last[:i]
        entries = []
        for j, (key, tensors) in enumerate(plan):
            slot = self._buffers.get((j, key))
            if slot is None:
                numels = [p.numel() for p in tensors]
                buf = tensors[0].new_empty(sum(numels))
                slot = self._buffers[(j, key)] = (buf, [v.view_as(p) for v, p in zip(buf.split(numels), tensors)])
            entries.append((key, slot))
        generator = self.generator

        def fill():
            out = []
            for key, (buf, views) in entries:
                state = generator.get_state()
                buf.normal_(generator=generator)
                out.append((key, state, buf, views))
            return out

        self._pending = self._pool.submit(fill)

    def end_step(self):
        self._last, self._now = self._now, []

    def generator_state(self):
        """The generator's state before the first prefetched draw not yet used."""
        self._wait()
        return self._ready[0][1] if self._ready else self.generator.get_state()

    def discard(self):
        """Rewind the generator to before the prefetched draws not yet used, and forget them."""
        self._wait()
        if self._ready:
            self.generator.set_state(self._ready[0][1])
        self._ready = []
