"""Recurrent layers RNN, LSTM and GRU with PyTorch's shapes, formulas, gate order and names."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

import graphc.frontends as F
from graphc.frontends.convert import to_node
from graphc.frontends.loops import scan
from graphc.frontends.tensor import Parameter, Tensor
from graphc.node import Node
from graphc.nn.layers import _count, _float, _rng
from graphc.nn.module import Module
from graphc.ops import make
from graphc.ops.leaves import constant_node
from graphc.ops.shapes import fmt_shape

_NONLINEARITIES: dict[str, Callable[[Any], Tensor]] = {"tanh": F.tanh, "relu": F.relu}


def _static(d: Any) -> bool:
    return isinstance(d, numbers.Integral)


def _sizes_agree(a: Any, b: Any) -> bool:
    """Equal where both are known (a size known only at call time may match anything)."""
    return not (_static(a) and _static(b)) or int(a) == int(b)


def _project(x: Any, w: Tensor) -> Tensor:
    """x (T, N, I) @ w^T for every step at once, before the loop: one (T*N, I) GEMM, so the
    gradient with respect to w is one GEMM too (not one per step and a sum)."""
    node = to_node(x, "x")
    y = F.matmul(F.reshape(x, (-1, node.shape[2])), F.transpose(w))
    return Tensor(make("reshape", y.node, shape=node.shape[:2] + (y.node.shape[1],)))


class _Recurrent(Module):
    """The shared part: parameters per layer (weight_ih_l{k} (G*H, in), weight_hh_l{k}
    (G*H, H), bias_ih_l{k}, bias_hh_l{k} (G*H,), PyTorch's names, so a PyTorch state dict
    loads as it is), the checks, and the stacking of layers; a subclass gives its number of
    gates G and its step."""

    gates = 1
    prefix = "recurrent"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, checkpoint: bool = False, seed: Any = None,
                 dtype: Any = "float32", name: str | None = None) -> None:
        super().__init__(name)
        kind = type(self).__name__
        self.input_size = _count(input_size, f"{kind} input_size")
        self.hidden_size = _count(hidden_size, f"{kind} hidden_size")
        self.num_layers = _count(num_layers, f"{kind} num_layers")
        if not isinstance(bias, bool):
            raise TypeError(f"{kind} bias: expected True or False, got {bias!r}")
        self.bias = bias
        if not isinstance(checkpoint, bool):
            raise TypeError(f"{kind} checkpoint: expected True or False, got {checkpoint!r}")
        # Recompute the steps between stored carries in the gradient instead of storing
        # every step's values: less memory for long sequences, one more forward pass.
        self.checkpoint = checkpoint
        self.dtype = _float(dtype)
        rng = _rng(seed)
        # PyTorch's initialisation: every weight and bias from U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / math.sqrt(self.hidden_size)
        rows = self.gates * self.hidden_size

        def draw(*shape: int) -> np.ndarray:
            return rng.uniform(-bound, bound, size=shape).astype(self.dtype)

        for k in range(self.num_layers):
            width = self.input_size if k == 0 else self.hidden_size
            self.add_parameter(f"weight_ih_l{k}", draw(rows, width))
            self.add_parameter(f"weight_hh_l{k}", draw(rows, self.hidden_size))
            if bias:
                self.add_parameter(f"bias_ih_l{k}", draw(rows))
                self.add_parameter(f"bias_hh_l{k}", draw(rows))

    # The first layer's parameters under the short names the API gives them.
    @property
    def weight_ih(self) -> Parameter:
        return self._entries["weight_ih_l0"]

    @property
    def weight_hh(self) -> Parameter:
        return self._entries["weight_hh_l0"]

    @property
    def bias_ih(self) -> Parameter | None:
        return self._entries.get("bias_ih_l0")

    @property
    def bias_hh(self) -> Parameter | None:
        return self._entries.get("bias_hh_l0")

    def layer_parameters(self, k: int) -> tuple[Parameter, Parameter, Parameter | None,
                                                 Parameter | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k (biases None when bias=False)."""
        e = self._entries
        return (e[f"weight_ih_l{k}"], e[f"weight_hh_l{k}"], e.get(f"bias_ih_l{k}"),
                e.get(f"bias_hh_l{k}"))

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        text += "" if self.bias else ", bias=False"
        return text + (", checkpoint=True" if self.checkpoint else "")

    # -- calls -----------------------------------------------------------------------------
    def __call__(self, x: Any, state: Any = None,  # type: ignore[override]
                 training: bool | None = None) -> Any:
        return self.forward(x, self.training if training is None else bool(training), state)

    def forward(self, x: Any, training: bool, state: Any = None) -> Any:
        """x (T, N, input_size), time first; state as `final` is returned: h, or (h, c) for
        an LSTM, each (N, H) for one layer and (num_layers, N, H) for several; zeros when
        None. Returns (outputs (T, N, H), final)."""
        node = self._check_input(x)
        n = node.shape[1]
        states = self._check_state(state, n)
        finals = []
        seq: Any = x
        for k in range(self.num_layers):
            init = states[k] if states is not None else self._zeros(n)
            seq, final = self._layer(k, seq, init)
            finals.append(final)
        return seq, self._join(finals)

    # -- one layer -------------------------------------------------------------------------
    def _layer(self, k: int, x: Any, init: Any) -> tuple[Tensor, Any]:
        w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k)
        xw = _project(x, w_ih)
        if b_ih is not None:
            xw = xw + self._input_bias(b_ih, b_hh)
        step = self._step(F.transpose(w_hh), b_hh)
        final, ys = scan(step, init, xs=xw, checkpoint=self.checkpoint)
        return ys, final

    def _input_bias(self, b_ih: Any, b_hh: Any) -> Any:
        """The bias added to x @ W_ih^T: both biases, where the step adds them side by side."""
        return b_ih + b_hh

    def _step(self, w_hh_t: Tensor, b_hh: Any) -> Callable[[Any, Tensor], tuple[Any, Any]]:
        raise NotImplementedError

    def _zeros(self, n: Any) -> Any:
        zero = constant_node(np.zeros((), self.dtype))
        return Tensor(make("broadcast_to", zero, shape=(n, self.hidden_size)))

    def _join(self, finals: list[Any]) -> Any:
        return finals[0] if self.num_layers == 1 else F.stack(finals, axis=0)

    def _split_state(self, value: Any, n: Any, what: str) -> list[Tensor]:
        """One (N, H) state per layer from `value`, checked: (N, H), or (L, N, H) for L > 1."""
        node = to_node(value, what)
        if node.dtype != self.dtype:
            raise TypeError(f"{self.name}: {what} has dtype {node.dtype}, the layer {self.dtype}")
        want = (n, self.hidden_size) if self.num_layers == 1 else \
            (self.num_layers, n, self.hidden_size)
        if node.ndim != len(want) or not all(_sizes_agree(a, b)
                                             for a, b in zip(node.shape, want)):
            layers = "" if self.num_layers == 1 else "num_layers, "
            raise ValueError(f"{self.name}: {what} has shape {fmt_shape(node.shape)}, expected "
                             f"({layers}batch, hidden_size) = {fmt_shape(want)}")
        t = Tensor(node)
        return [t] if self.num_layers == 1 else [t[k] for k in range(self.num_layers)]

    def _check_state(self, state: Any, n: Any) -> list[Any] | None:
        if state is None:
            return None
        return self._split_state(state, n, "initial state h0")

    def _check_input(self, x: Any) -> Node:
        node = to_node(x, f"{self.name} input x")
        if node.ndim != 3:
            raise ValueError(f"{self.name}: input x must be (T, N, input_size) (time first), "
                             f"got shape {fmt_shape(node.shape)}")
        if not _sizes_agree(node.shape[2], self.input_size):
            raise ValueError(f"{self.name}: input x has {node.shape[2]} features (shape "
                             f"{fmt_shape(node.shape)}), the layer's input_size is "
                             f"{self.input_size}")
        if node.dtype != self.dtype:
            raise TypeError(f"{self.name}: input x has dtype {node.dtype}, the layer "
                            f"{self.dtype} (cast one of them)")
        return node


class RNN(_Recurrent):
    """Elman RNN: h' = nonlinearity(x W_ih^T + b_ih + h W_hh^T + b_hh), nonlinearity "tanh"
    or "relu" (PyTorch's nn.RNN)."""

    gates = 1
    prefix = "rnn"

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh",
                 num_layers: int = 1, bias: bool = True, checkpoint: bool = False,
                 seed: Any = None, dtype: Any = "float32", name: str | None = None) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNN nonlinearity: expected 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, checkpoint, seed, dtype,
                         name)

    def extra_repr(self) -> str:
        extra = "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}"
        return super().extra_repr() + extra

    def _step(self, w_hh_t: Tensor, b_hh: Any) -> Callable[[Any, Tensor], tuple[Any, Any]]:
        act = _NONLINEARITIES[self.nonlinearity]

        def step(h: Tensor, xw: Tensor) -> tuple[Tensor, Tensor]:
            h = act(xw + F.matmul(h, w_hh_t))
            return h, h
        return step


class LSTM(_Recurrent):
    """LSTM (PyTorch's nn.LSTM, gates i, f, g, o in that order along the weights' rows):
    i, f, o = sigmoid(...), g = tanh(...), c' = f c + i g, h' = o tanh(c'). The state is a
    pair (h, c)."""

    gates = 4
    prefix = "lstm"

    def _step(self, w_hh_t: Tensor, b_hh: Any) -> Callable[[Any, Tensor], tuple[Any, Any]]:
        hs = self.hidden_size

        def step(carry: tuple[Tensor, Tensor], xw: Tensor) -> tuple[Any, Tensor]:
            h, c = carry
            z = xw + F.matmul(h, w_hh_t)
            i = F.sigmoid(z[:, 0:hs])
            f = F.sigmoid(z[:, hs:2 * hs])
            g = F.tanh(z[:, 2 * hs:3 * hs])
            o = F.sigmoid(z[:, 3 * hs:4 * hs])
            c = f * c + i * g
            h = o * F.tanh(c)
            return (h, c), h
        return step

    def _zeros(self, n: Any) -> Any:
        zero = super()._zeros(n)
        return (zero, zero)

    def _join(self, finals: list[Any]) -> Any:
        if self.num_layers == 1:
            return finals[0]
        return (F.stack([h for h, _ in finals], axis=0), F.stack([c for _, c in finals], axis=0))

    def _check_state(self, state: Any, n: Any) -> list[Any] | None:
        if state is None:
            return None
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f"{self.name}: the LSTM's initial state must be a pair (h0, c0), "
                             f"got {type(state).__name__}")
        hs = self._split_state(state[0], n, "initial state h0")
        cs = self._split_state(state[1], n, "initial state c0")
        return list(zip(hs, cs))


class GRU(_Recurrent):
    """GRU (PyTorch's nn.GRU, gates r, z, n along the weights' rows):
    r, z = sigmoid(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z}),
    n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h' = (1 - z) n + z h."""

    gates = 3
    prefix = "gru"

    def _input_bias(self, b_ih: Any, b_hh: Any) -> Any:
        # b_hn sits inside r * (...): only b_ih goes outside the loop.
        return b_ih

    def _step(self, w_hh_t: Tensor, b_hh: Any) -> Callable[[Any, Tensor], tuple[Any, Any]]:
        hs = self.hidden_size

        def step(h: Tensor, xw: Tensor) -> tuple[Tensor, Tensor]:
            hw = F.matmul(h, w_hh_t)
            if b_hh is not None:
                hw = hw + b_hh
            r = F.sigmoid(xw[:, 0:hs] + hw[:, 0:hs])
            z = F.sigmoid(xw[:, hs:2 * hs] + hw[:, hs:2 * hs])
            n = F.tanh(xw[:, 2 * hs:] + r * hw[:, 2 * hs:])
            h = (1.0 - z) * n + z * h
            return h, h
        return step


__all__ = ["RNN", "LSTM", "GRU"]
