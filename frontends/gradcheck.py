"""gc.check_grad: symbolic gradients against central finite differences."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from graphc.frontends.autodiff import grad
from graphc.frontends.tensor import Parameter, Tensor, placeholder
from graphc.function import function


@dataclass
class GradCheckResult:
    """Per input: the largest |symbolic - numeric| and the error relative to the scale."""

    names: list[str]
    max_abs_error: list[float]
    max_rel_error: list[float]
    checked: list[int]
    ok: bool
    details: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        rows = [f"{n}: max abs err {a:.3g}, max rel err {r:.3g} over {c} entries"
                for n, a, r, c in zip(self.names, self.max_abs_error, self.max_rel_error,
                                      self.checked)]
        return ("gradient check passed" if self.ok else "gradient check FAILED") + \
            "\n  " + "\n  ".join(rows + self.details)


def _defaults(dtype: np.dtype) -> tuple[float, float, float]:
    if dtype == np.float64:
        return 1e-6, 1e-5, 1e-7  # eps, rtol, atol
    return 1e-2, 2e-2, 1e-3


def check_grad(target: Callable[..., Tensor] | Tensor, *args: Any, wrt: Any = None,
               feed: Mapping[Tensor, Any] | None = None, eps: float | None = None,
               rtol: float | None = None, atol: float | None = None,
               max_entries: int = 200, seed: int = 0, backend: str = "numpy",
               raise_on_failure: bool = False) -> GradCheckResult:
    """Compares gc.grad with (L(w+eps e_i) - L(w-eps e_i)) / 2 eps, entry by entry.

    Two forms: `check_grad(fn, *arrays)` builds placeholders for the arrays and checks the
    gradient of the scalar fn(*placeholders) with respect to each; `check_grad(loss,
    wrt=[tensors], feed={placeholder: array})` checks a built graph, where wrt holds
    placeholders (perturbed through `feed`) or parameters (perturbed in place, restored).
    At most `max_entries` randomly chosen entries are checked per input. Use float64."""
    if callable(target) and not isinstance(target, Tensor):
        arrays = [np.asarray(a, dtype=np.float64) if not isinstance(a, np.ndarray) else a
                  for a in args]
        phs = [placeholder(a.shape, a.dtype, name=f"arg{i}") for i, a in enumerate(arrays)]
        loss = target(*phs)
        feed = dict(zip(phs, arrays))
        wrt_list: list[Tensor] = phs
    else:
        if args:
            raise TypeError("check_grad: pass wrt= and feed= with a built loss tensor")
        loss = target
        wrt_list = [wrt] if isinstance(wrt, Tensor) else list(wrt or [])
        feed = dict(feed or {})
    if not isinstance(loss, Tensor):
        raise TypeError(f"check_grad: the loss must be a Tensor, got {type(loss).__name__}")
    if not wrt_list:
        raise ValueError("check_grad: nothing to differentiate with respect to (wrt)")
    inputs = list(feed)
    values = [np.array(feed[p], dtype=p.dtype, copy=True) for p in inputs]
    grads = grad(loss, wrt_list)
    f_loss = function(inputs, loss, backend=backend)
    f_grads = function(inputs, grads, backend=backend)
    symbolic = f_grads(*values)
    rng = np.random.default_rng(seed)
    names: list[str] = []
    abs_errs: list[float] = []
    rel_errs: list[float] = []
    counts: list[int] = []
    details: list[str] = []
    ok = True
    for w, g_sym in zip(wrt_list, symbolic):
        d_eps, d_rtol, d_atol = _defaults(w.dtype)
        e, rt, at = (d if v is None else v  # an explicit 0 tolerance counts
                     for v, d in ((eps, d_eps), (rtol, d_rtol), (atol, d_atol)))
        if isinstance(w, Parameter):
            base, setter = w.value, lambda v, w=w: setattr(w, "value", v)
        elif w in feed:
            k = inputs.index(w)
            base = values[k]
            setter = lambda v, k=k: values.__setitem__(k, v)  # noqa: E731
        else:
            raise ValueError(f"check_grad: {w!r} is neither a parameter nor fed a value")
        size = base.size
        picks = rng.choice(size, size=min(size, max_entries), replace=False) if size else []
        worst_abs = worst_rel = 0.0
        try:
            for i in picks:
                shifted = []
                for sign in (1, -1):
                    v = base.copy()
                    v.flat[i] += sign * e
                    setter(v)
                    shifted.append(float(f_loss(*values)))
                numeric = (shifted[0] - shifted[1]) / (2 * e)
                sym = float(np.asarray(g_sym).flat[i])
                err = abs(sym - numeric)
                rel = err / max(abs(numeric), abs(sym), 1e-12)
                worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
                if err > at + rt * abs(numeric):
                    ok = False
                    if len(details) < 10:
                        details.append(f"{w.name or 'input'}[{np.unravel_index(i, base.shape)}]"
                                       f": symbolic {sym:.8g}, numeric {numeric:.8g}")
        finally:
            setter(base)
        names.append(w.name or f"input{len(names)}")
        abs_errs.append(worst_abs)
        rel_errs.append(worst_rel)
        counts.append(len(picks))
    result = GradCheckResult(names, abs_errs, rel_errs, counts, ok, details)
    if raise_on_failure and not ok:
        raise AssertionError(str(result))
    return result
