r"""Where a step's standard normals come from: drawn when a letter asks, or prefetched.

Every O letter of a group draws one flat buffer of standard normals from the optimizer's
``torch.Generator`` (:meth:`~sdekit.torch.context.Letters.normals`). On a CPU that
generator is serial and costs a few ns per number, a large part of a step of a big network
(``benchmarks/RESULTS_torch.md``). :class:`Prefetch` (``SDEOptimizer(...,
prefetch_noise=True)``) draws the numbers the next letters will ask for in a background
thread while the closure (forward and backward) runs, from the same generator, in the
same order and in buffers of the same sizes, so every letter receives **the same numbers
bit for bit** as without it: the stream is a function of the sequence of draw sizes only.
The sequence is predicted from the previous step (the draws that followed the same point
of the step) and checked when a letter asks: a draw for other tensors than predicted
rewinds the generator to the state before the first unused prefetched draw and draws
directly (so a multirate block whose steps differ is still exact, only not faster).
"""
import weakref
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Direct", "Prefetch"]


class Direct:
    """Draw when asked: one ``normal_`` on the group's flat buffer (the default)."""

    def __init__(self, generator):
        self.generator = generator

    def draw(self, cache, tensors):
        buf, views = cache.noise_for(tensors)
        buf.normal_(generator=self.generator)
        return views

    def before_closure(self):
        """Called before each closure call (nothing to do)."""

    def end_step(self):
        """Called at the end of each step (nothing to do)."""

    def generator_state(self):
        """The generator's state as the next draw will find it."""
        return self.generator.get_state()

    def discard(self):
        """Forget anything drawn ahead (nothing here)."""


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
