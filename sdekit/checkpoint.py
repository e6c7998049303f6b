"""Checkpoints: a run's :class:`~sdekit.records.State` as a checked ``.npz`` file.

The file holds the state's arrays (q, p, xi, force, noise) and one JSON document
(step, random-stream position, scheme and parameters, backend, format version, and
a SHA-256 checksum over all of it). Writing is atomic: a temporary file in the same
folder, flushed and fsync'd, then renamed over the target, so an interrupted write
never leaves a half-written or changed checkpoint. Reading uses
``allow_pickle=False`` and verifies the format, version and checksum; anything
wrong is a ValueError naming the file.
"""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .records import STATE_VERSION, State

FORMAT = "sdekit-checkpoint"
ARRAYS = ("q", "p", "xi", "force", "noise", "accepted", "log_weight", "work", "heat")


def _digest(meta, arrays):
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: must be a file path (str or os.PathLike), got {path!r}")
    return os.fspath(path)


def save(path, state):
    """Write ``state`` to ``path`` (.npz) atomically, with a checksum.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; written exactly at this name (no suffix is added).
    state : State
        A run's ``.state``.
    """
    if not isinstance(state, State):
        raise ValueError(f"state: must be an sdekit State (a run's .state), got {type(state).__name__}")
    path = _path(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):  # before hashing the arrays
        raise ValueError(f"{path}: is a folder, not a checkpoint file")
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: folder {folder} does not exist")
    arrays = {name: getattr(state, name) for name in ARRAYS if getattr(state, name) is not None}
    meta = {"format": FORMAT, "version": state.version, "step": state.step, "rng": state.rng,
            "spec": state.spec, "backend": state.backend, "arrays": sorted(arrays)}
    meta["checksum"] = _digest(meta, arrays)
    fd, tmp = tempfile.mkstemp(prefix=".sdekit-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load(path):
    """Read a checkpoint written by :func:`save`, verifying format, version and checksum.

    Returns
    -------
    State

    Raises
    ------
    ValueError
        naming the file, if it is missing, truncated, corrupted, edited by hand,
        holds pickled objects, or was written by another format version.
    """
    path = _path(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "__meta__" not in names:
                raise ValueError(f"{path}: not an sdekit checkpoint (no metadata)")
            meta = json.loads(str(z["__meta__"]))
            arrays = {name: z[name] for name in names - {"__meta__"}}
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    except ValueError as err:  # numpy: object arrays refused with allow_pickle=False, bad headers
        raise ValueError(f"{path}: unreadable checkpoint ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an sdekit checkpoint")
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta.get('version')!r}, this sdekit reads {STATE_VERSION}")
    checksum = meta.pop("checksum", None)
    if sorted(arrays) != meta.get("arrays") or checksum != _digest(meta, arrays):
        raise ValueError(f"{path}: checksum mismatch: the checkpoint is corrupted or was edited")
    return State(q=arrays["q"], p=arrays.get("p"), xi=arrays["xi"], force=arrays["force"],
                 noise=arrays.get("noise"), accepted=arrays.get("accepted"), log_weight=arrays.get("log_weight"),
                 work=arrays.get("work"), heat=arrays.get("heat"), step=meta["step"], rng=meta["rng"], spec=meta["spec"],
                 backend=meta["backend"], version=meta["version"])
