"""The text of the drivers around a generated kernel's ``step``: the cpu ``trajectory``
and ``ensemble``, and the cuda ``advance`` and ``reduce_blocks``
(see :mod:`sdekit.kernels.codegen`, which writes the module around them).

Every argument list comes from :mod:`sdekit.kernels.abi`; the loads, records and stores of a
path's state from its storage strategy (:mod:`sdekit.kernels.storage`).
"""
from . import abi
from .storage import _indent


CARRIED = {"metropolis": {"na": "a", "U": "Ui"}, "girsanov": {"lw": "gw"}, "shadow": {"W": "Wi", "Qh": "Qi", "E": "Ei"}}
"""The per-path scalars a feature adds to ``step`` (its arguments, :mod:`abi`) and the drivers'
locals that carry them: the Metropolis count and U(q), the Girsanov log-weight, the shadow
work, heat and H(q, p)."""


def _carried_locals(features):
    """``{step argument: driver local}`` of the carried scalars of ``features``, in :data:`CARRIED`'s order."""
    return {arg: local for feature, names in CARRIED.items() if feature in features for arg, local in names.items()}


def _step_call(features, register, path, indent):
    """The drivers' call of ``step`` on the path's locals qi, pi, Fi, Ri, pO, x (from :mod:`abi`)."""
    local = dict(q="qi", p="pi", F="Fi", R="Ri", xi="x", **_carried_locals(features))
    rename = dict(local, path=path, **({"inv_mass": "im", "sqrt_mass": "sm"} if register else {}))
    if "time_dependent" in features:
        rename["row"] = "n - 1"
    return abi.call("step", features, indent=indent, assign=abi.results("step", features, **local), **rename)


def _bad(features):
    """The divergence step a driver records: minus the step for a SHAKE/RATTLE failure."""
    return "(n if ok else -n)" if "constrained" in features else "n"


def _blocks(storage, features, path, record, bad):
    """The step loop of a cpu driver, one record block at a time.

    No per-step bookkeeping but the running max of |q_j| (``worst``): a block of
    ``record_every`` steps runs, then the path is checked once (``healthy``: non-finite
    values stay non-finite, so the block's end shows them; ``worst`` shows a |q_j| that
    passed max_abs on the way). A path that fails is put back at the block's start (its
    copies ``*_b``, and its Metropolis count and Girsanov log-weight) and replays the block one step at a time, which names the step as a
    per-step check would, with the same numbers. ``record`` are the lines run at a record
    (``r`` its index), ``bad`` the target of the failing step."""
    scalars = ["x", "ctr", "spare"] + list(_carried_locals(features).values())   # they replay too
    save = [", ".join(f"{v}_b" for v in scalars) + " = " + ", ".join(scalars)]
    restore = [", ".join(scalars) + " = " + ", ".join(f"{v}_b" for v in scalars)]
    return [
        "n = 0",
        "block = record_every      # steps between two checks: a record block, or 1 while replaying one",
        "while n < n_steps:",
        "    start = n",
        "    stop = min(n + block, n_steps)",
        *("    " + line for line in storage.block_save() + save),
        "    worst = DT(0.0)",
        "    for n in range(start + 1, stop + 1):",
        *_step_call(features, storage.name == "register", path, " " * 8).split("\n"),
        *("        " + line for line in storage.largest("qi", "worst")),
        "    n = stop",
        "    if not (healthy(qi, pi, x, max_abs) & (worst <= max_abs)):",
        "        if block > 1:     # diverged in this block: replay it step by step to name the step",
        *("            " + line for line in storage.block_restore() + restore),
        "            n = start",
        "            block = 1",
        "            continue",
        f"        {bad} = {_bad(features)}",
        "        break",
        "    if n % record_every == 0:",
        "        r = n // record_every",
        *("        " + line for line in record),
    ]


def _carried_scalars(storage, features, inv_mass):
    """The text of a path's carried scalars, for every driver: accepted proposals (na) and U(q),
    log-weight (lw), shadow work and heat (nw, nh) and H(q, p). Returns ``load(row, pad)``,
    ``store(row, pad)`` (lines, each after a newline) and the arguments ``accumulate`` adds."""
    metropolis, girsanov, shadow = ("metropolis" in features, "girsanov" in features, "shadow" in features)
    u0 = storage.potential_of("qi") if metropolis or shadow else ""   # U(q) at the path's start, then carried
    acc = (", a" if metropolis else "") + (", gw" if girsanov else "") + (", Wi, Qi" if shadow else "")
    load = lambda row, pad: ((f"\n{pad}a = na[{row}]\n{pad}Ui = {u0}" if metropolis else "")
                             + (f"\n{pad}gw = lw[{row}]" if girsanov else "")
                             + (f"\n{pad}Wi, Qi = nw[{row}], nh[{row}]   # shadow work and heat so far"
                                f"\n{pad}Ei = hamiltonian({u0}, kinetic(pi, {inv_mass}))" if shadow else ""))
    store = lambda row, pad: ((f"\n{pad}na[{row}] = a" if metropolis else "")
                              + (f"\n{pad}lw[{row}] = gw" if girsanov else "")
                              + (f"\n{pad}nw[{row}], nh[{row}] = Wi, Qi" if shadow else ""))
    return load, store, acc


def cpu_drivers(storage, features, carried, cache):
    a_load, a_store, a_acc = _carried_scalars(storage, features, "im" if storage.name == "register" else "inv_mass")
    return f'''

@njit(cache={cache}, error_model=ERROR_MODEL)
{abi.define("trajectory", features)}
    """One path (row 0 of q, p, F, R, xi) for n_steps steps, recorded every record_every steps.

    Record 0 is the initial state. Returns (ctr, bad) with bad the first step at
    which the path is non-finite or out of bounds (0 if none); it stops there.
    """
    d = deltas(h)
{_indent(storage.trajectory_setup(features), 4)}
    x = xi[0]{a_load(0, "    ")}
    ctr = ctr0
    spare = first_spare(key0, key1, 0, ctr)
    cs = ou_constants(x, gamma, sigma, d)
{_indent(storage.record(0), 4)}
    bad = 0
{_indent(_blocks(storage, features, "0", storage.record("r"), "bad"), 4)}
{_indent(storage.store(0, [("q", "qi"), ("p", "pi"), ("F", "Fi"), ("R", "Ri")]), 4)}
    xi[0] = x{a_store(0, "    ")}
    return ctr, bad


@njit(nogil=True, cache={cache}, error_model=ERROR_MODEL)
{abi.define("ensemble", features)}
    """Chunks first_chunk, first_chunk + 1, ... (one per row of part), in turn: chunk c runs
    paths c CHUNK .. c CHUNK + CHUNK - 1 in index order, their recorded values summed into
    part[c - first_chunk] (n_records, 3, K) and the live paths counted in cnt[c - first_chunk]
    (n_records,); bad[i] = step at which path i diverged (it stops there). Without the GIL: the
    host runs slices of the chunks on its threads (sdekit.kernels.cpu)."""
    d = deltas(h)
{_indent(storage.paths_setup(features), 4)}
    n_paths = q.shape[0]
    for c in range(part.shape[0]):
        pc, nc = part[c], cnt[c]      # this chunk's sums and counts
        first = (first_chunk + c) * CHUNK
        for i in range(first, min(first + CHUNK, n_paths)):
{_indent(storage.paths_load("i", carried), 12)}
            x = xi[i]{a_load("i", "            ")}
            ctr = ctr0
            spare = first_spare(key0, key1, i, ctr)
            cs = ou_constants(x, gamma, sigma, d)
            accumulate(pc[0], qi, pi, pO, x{a_acc})
            nc[0] += 1
{_indent(_blocks(storage, features, "i", [f"accumulate(pc[r], qi, pi, pO, x{a_acc})", "nc[r] += 1"], "bad[i]"), 12)}
{_indent(storage.store("i", carried), 12)}
            xi[i] = x{a_store("i", "            ")}
'''


def cuda_drivers(storage, features, carried):
    load = "".join(f"{local}[j] = {name}[i, j]\n            " for name, local in carried if name in ("p", "R"))
    save = "".join(f"{name}[i, j] = {local}[j]\n                " for name, local in carried if name in ("p", "R"))
    work = ""
    load_scalars, store_scalars, a_acc = _carried_scalars(storage, features, "inv_mass")
    a_load, a_store = load_scalars("i", " " * 8), store_scalars("i", " " * 12)
    # the stacked forces of G force groups have their own loop (G D of them)
    grouped = storage.groups > 1
    f_load = "" if grouped else "Fi[j] = F[i, j]\n            "
    f_save = "" if grouped else "F[i, j] = Fi[j]\n                "
    f_load_groups = f"\n        for j in range({storage.fwidth}):\n            Fi[j] = F[i, j]" if grouped else ""
    f_save_groups = f"\n            for j in range({storage.fwidth}):\n                F[i, j] = Fi[j]" if grouped else ""
    if "metropolis_buffers" in features:
        work += (f"\n    q0 = cuda.local.array(D, DT)\n    p0 = cuda.local.array(D, DT)"
                 f"\n    F0 = cuda.local.array({storage.fwidth}, DT)")
    if "girsanov_buffers" in features:
        work += "\n    uq = cuda.local.array(D, np.float64)"
    if "constrained" in features:
        work += "\n    qo = cuda.local.array(D, np.float64)\n    work = cuda.local.array(WORK, np.float64)"
    if "normals_buffer" in features:
        work += f"\n    za = cuda.local.array({max(1, storage.normals)} * D, np.float64)"
    return f'''

@cuda.jit
{abi.define("advance", features)}
    """One thread per path: n_steps steps from draw position ctr0, then this block's
    sums of the recorded columns into part[block] (a fixed tree over BLOCK threads)
    and its number of live paths into cnt[block]. bad[i] is the step at which
    path i diverged (0 if it did not; it stops there and is not summed)."""
    i = cuda.grid(1)
    t = cuda.threadIdx.x
    n_paths = q.shape[0]
    qi = cuda.local.array(D, DT)
    pi = cuda.local.array(D, DT)
    Fi = cuda.local.array({storage.fwidth}, DT)
    Ri = cuda.local.array(D, DT)
    pO = cuda.local.array(D, DT){work}
    row = cuda.local.array((3, K), np.float64)
    for a in range(3):
        for k in range(K):
            row[a, k] = 0.0
    live = 0
    if i < n_paths:
        for j in range(D):
            qi[j] = q[i, j]
            pi[j] = 0.0
            Ri[j] = 0.0
            {load}{f_load}pO[j] = p_O[i, j]{f_load_groups}
        x = xi[i]{a_load}
        if bad[i] == 0:
            d = deltas(h)
            ctr = ctr0
            spare = first_spare(key0, key1, i, ctr)
            cs = ou_constants(x, gamma, sigma, d)
            for n in range(1, n_steps + 1):
{_step_call(features, False, "i", " " * 16)}
                if not healthy(qi, pi, x, max_abs):
                    bad[i] = {"(step0 + n if ok else -(step0 + n))" if "constrained" in features else "step0 + n"}
                    break
            for j in range(D):
                q[i, j] = qi[j]
                {save}{f_save}p_O[i, j] = pO[j]{f_save_groups}
            xi[i] = x{a_store}
        if bad[i] == 0:
            accumulate(row, qi, pi, pO, x{a_acc})
            live = 1
    # block sums of the 3 K recorded sums and the live count: columns in batches of WIDTH
    # through a (BLOCK, WIDTH) shared array, halving the active threads each round
    shared = cuda.shared.array((BLOCK, WIDTH), np.float64)
    for b0 in range(0, 3 * K + 1, WIDTH):
        for w in range(WIDTH):
            e = b0 + w
            if e < 3 * K:
                shared[t, w] = row[e // K, e % K]
            elif e == 3 * K:
                shared[t, w] = live
            else:
                shared[t, w] = 0.0
        cuda.syncthreads()
        half = BLOCK // 2
        while half > 0:
            if t < half:
                for w in range(WIDTH):
                    shared[t, w] += shared[t + half, w]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            for w in range(WIDTH):
                e = b0 + w
                if e < 3 * K:
                    part[cuda.blockIdx.x, e // K, e % K] = shared[0, w]
                elif e == 3 * K:
                    cnt[cuda.blockIdx.x] = shared[0, w]
        cuda.syncthreads()


@cuda.jit
{abi.define("reduce_blocks", features)}
    """S[r] = sum over blocks of part, block by block in order (one thread per entry)."""
    e = cuda.grid(1)
    if e < 3 * K:
        a = e // K
        k = e % K
        acc = 0.0
        for b in range(part.shape[0]):
            acc += part[b, a, k]
        S[r, a, k] = acc
    if e == 0:
        n = 0.0
        for b in range(cnt.shape[0]):
            n += cnt[b]
        counts[r] = n
'''
