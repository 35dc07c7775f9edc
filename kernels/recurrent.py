"""Rate-based recurrent layers with biological delays (DynVision-style), dense or convolutional.

Layer ``l`` at step ``t`` leaks toward a rectified drive made of the layer
below ``delay_ff`` steps ago and itself ``delay_rec`` steps ago::

    h_l(t) = h_l(t-1) + alpha * (relu(W_l h_{l-1}(t - d_ff) + U_l h_l(t - d_rec) + b_l) - h_l(t-1))

Layer 0's input is a static stimulus (shown from ``t = 0``, reaching layer 0
after ``d_ff`` steps). A *history* is, per layer, a ring of the last
``D = max(d_ff, d_rec)`` states, slot ``t % D`` holding step ``t``; it is all a
run needs to continue, so it is what temporal checkpoints store. Numpy in,
numpy out (numba loops); cupy in, cupy out (:mod:`.recurrent_gpu`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

__all__ = ["DelayedRNN", "make_weights", "stimulus", "empty_history", "advance", "counter_uniform", "array_module"]


@dataclass(frozen=True)
class DelayedRNN:
    """A stack of delayed rate layers.

    ``sizes`` are units per layer for dense layers (``sizes[0]`` is the input
    size) or channels for convolutional layers on a ``height x width`` grid
    (3x3 kernels, zero padding).
    """

    sizes: tuple[int, ...]
    conv: bool = False
    height: int = 0
    width: int = 0
    delay_ff: int = 5
    delay_rec: int = 3
    alpha: float = 0.3
    gain: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.sizes) < 2:
            raise ValueError(f"DelayedRNN needs an input size and at least one layer, got sizes={self.sizes}")
        if self.delay_ff < 1 or self.delay_rec < 1:
            raise ValueError(f"delays must be >= 1 step, got delay_ff={self.delay_ff} delay_rec={self.delay_rec}")
        if self.conv and (self.height < 1 or self.width < 1):
            raise ValueError("a convolutional DelayedRNN needs height and width >= 1")

    @property
    def depth(self) -> int:
        return max(self.delay_ff, self.delay_rec)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def unit_shape(self, layer: int) -> tuple[int, ...]:
        """Shape of one sample's state in ``layer`` (1-based; 0 is the input)."""
        c = self.sizes[layer]
        return (c, self.height, self.width) if self.conv else (c,)


def array_module(x: Any) -> Any:
    """numpy or cupy, following ``x``."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def counter_uniform(seed: int, ids: Any, n: int, xp: Any = np) -> Any:
    """Uniform [0, 1) numbers ``(len(ids), n)`` keyed by (seed, id, column): same on CPU and GPU."""
    ids = xp.asarray(ids, dtype=xp.uint64)[:, None]
    col = xp.arange(n, dtype=xp.uint64)[None, :]
    key = xp.uint64(seed * 0x632BE59BD9B4E019 & (2**64 - 1))
    z = ids * xp.uint64(0x9E3779B97F4A7C15) + col * xp.uint64(0xD1B54A32D192ED03) + key
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(0x94D049BB133111EB)
    z = z ^ (z >> xp.uint64(31))
    return (z >> xp.uint64(40)).astype(xp.float32) * xp.float32(2.0**-24)


def make_weights(model: DelayedRNN) -> list[dict[str, np.ndarray]]:
    """Feedforward ``W``, recurrent ``U`` and bias ``b`` per layer (float32, keyed by (seed, layer))."""
    out = []
    for layer in range(1, len(model.sizes)):
        rng = np.random.Generator(np.random.Philox(key=[model.seed, layer]))
        n_in, n_out = model.sizes[layer - 1], model.sizes[layer]
        if model.conv:
            fan_ff, fan_rec = 9 * n_in, 9 * n_out
            w = rng.standard_normal((n_out, n_in, 3, 3)) * np.sqrt(2.0 / fan_ff)
            u = rng.standard_normal((n_out, n_out, 3, 3)) * model.gain / np.sqrt(fan_rec)
        else:
            w = rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
            u = rng.standard_normal((n_out, n_out)) * model.gain / np.sqrt(n_out)
        b = rng.standard_normal(n_out) * 0.05
        out.append({"W": w.astype(np.float32), "U": u.astype(np.float32), "b": b.astype(np.float32)})
    return out


def stimulus(model: DelayedRNN, sample_ids: Any, xp: Any = np) -> Any:
    """The static input of each sample, keyed by (seed, sample id): ``(s, n_in)`` or ``(s, c, y, x)``."""
    n = int(np.prod(model.unit_shape(0)))
    x = counter_uniform(model.seed + 7919, sample_ids, n, xp)
    return x.reshape((len(sample_ids), *model.unit_shape(0)))


def empty_history(model: DelayedRNN, n_samples: int, xp: Any = np) -> list[Any]:
    """The history before step 0 (all zeros): per layer ``(D, s, *unit)``."""
    return [xp.zeros((model.depth, n_samples, *model.unit_shape(l)), xp.float32)
            for l in range(1, len(model.sizes))]


@numba.njit(nogil=True, cache=True)
def _leak_relu(h: np.ndarray, pre: np.ndarray, alpha: float, out: np.ndarray) -> None:
    hf, pf, of = h.reshape(-1), pre.reshape(-1), out.reshape(-1)
    for i in range(hf.size):
        p = pf[i] if pf[i] > 0.0 else 0.0
        of[i] = hf[i] + alpha * (p - hf[i])


@numba.njit(nogil=True, cache=True)
def _conv3x3_acc(inp: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    s, cin, ny, nx = inp.shape
    cout = w.shape[0]
    for n in range(s):
        for co in range(cout):
            for ci in range(cin):
                for dy in range(3):
                    for dx in range(3):
                        wv = w[co, ci, dy, dx]
                        if wv == 0.0:
                            continue
                        for y in range(max(0, 1 - dy), min(ny, ny + 1 - dy)):
                            yy = y + dy - 1
                            for x in range(max(0, 1 - dx), min(nx, nx + 1 - dx)):
                                out[n, co, y, x] += wv * inp[n, ci, yy, x + dx - 1]


def _drive(model: DelayedRNN, w: dict[str, Any], ff: Any, rec: Any, xp: Any) -> Any:
    if not model.conv:
        return ff @ w["W"].T + rec @ w["U"].T + w["b"]
    if xp is not np:
        from .recurrent_gpu import conv3x3_gpu

        return conv3x3_gpu(ff, w["W"]) + conv3x3_gpu(rec, w["U"]) + w["b"][None, :, None, None]
    pre = np.empty((ff.shape[0], w["W"].shape[0], model.height, model.width), np.float32)
    pre[...] = w["b"][None, :, None, None]
    _conv3x3_acc(np.ascontiguousarray(ff), w["W"], pre)
    _conv3x3_acc(np.ascontiguousarray(rec), w["U"], pre)
    return pre


def _leak(h: Any, pre: Any, alpha: float, xp: Any) -> Any:
    if xp is not np:
        from .recurrent_gpu import leak_relu_gpu

        return leak_relu_gpu(h, pre, alpha)
    out = np.empty_like(h)
    _leak_relu(np.ascontiguousarray(h), np.ascontiguousarray(pre), np.float32(alpha), out)
    return out


def advance(model: DelayedRNN, weights: list[dict[str, Any]], x: Any, history: list[Any], t0: int, steps: int,
            record: bool = False) -> tuple[list[Any], list[Any] | None]:
    """Run steps ``t0 .. t0+steps-1`` from ``history`` (the ring after step ``t0-1``).

    Returns the new history (the input is not modified) and, if ``record``,
    per layer the states of every step ``(steps, s, *unit)``.
    """
    xp = array_module(x)
    if xp is not np:
        weights = [{key: xp.asarray(v) for key, v in w.items()} for w in weights]
    d, dff, drec = model.depth, model.delay_ff, model.delay_rec
    hist = [h.copy() for h in history]
    rec_out = [xp.empty((steps, *h.shape[1:]), xp.float32) for h in hist] if record else None
    zero_in = xp.zeros_like(x)
    for t in range(t0, t0 + steps):
        # top layer first: layer l reads layer l-1's slot (t - d_ff) before l-1 overwrites slot t % D
        for l in range(model.n_layers - 1, -1, -1):
            if l == 0:
                ff = x if t - dff >= 0 else zero_in
            else:
                ff = hist[l - 1][(t - dff) % d]
            pre = _drive(model, weights[l], ff, hist[l][(t - drec) % d], xp)
            new = _leak(hist[l][(t - 1) % d], pre, model.alpha, xp)
            hist[l][t % d] = new
            if rec_out is not None:
                rec_out[l][t - t0] = new
    return hist, rec_out
