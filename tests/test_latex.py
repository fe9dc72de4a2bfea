"""gc.to_latex: textbook math for a graph, shared parts bound once, valid-looking LaTeX."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.latex import leaf_name


def balanced(text: str) -> bool:
    """Braces nest, \\left/\\right pair up, and every \\begin has its \\end."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return (depth == 0 and text.count(r"\left") == text.count(r"\right")
            and text.count(r"\begin{") == text.count(r"\end{"))


def definitions(text: str) -> list[str]:
    return [line.split("&=")[0].strip() for line in text.splitlines() if "&=" in line]


def mlp(dtype="float64"):
    rng = np.random.default_rng(0)
    x = gc.placeholder((8, 4), dtype, name="x")
    y = gc.placeholder((8,), "int64", name="y")
    W1 = gc.parameter(rng.normal(size=(4, 5)).astype(dtype), name="W1")
    b1 = gc.parameter(np.zeros(5, dtype), name="b1")
    W2 = gc.parameter(rng.normal(size=(5, 3)).astype(dtype), name="W2")
    b2 = gc.parameter(np.zeros(3, dtype), name="b2")
    loss = gc.nn.cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, y)
    return (x, y), gc.grad(loss, [W1, b1, W2, b2])


def check_mlp_gradient(text: str) -> None:
    assert text.startswith(r"\begin{aligned}") and text.endswith(r"\end{aligned}")
    assert balanced(text), text
    hidden = re.search(r"(z_\{\d\}) &= x W_\{1\} \+ b_\{1\}", text)
    assert hidden, text
    z = hidden.group(1)
    for piece in (rf"h_{{1}} &= \max(0, {z})",
                  r"W_{2}^{\top}", rf"\odot \mathbb{{1}}[{z} > 0]", r"\operatorname{softmax}(",
                  r"\operatorname{onehot}(y)", r"\frac{\partial L}{\partial W_{1}} &= x^{\top}",
                  r"\frac{\partial L}{\partial W_{2}} &= h_{1}^{\top}",
                  r"\frac{\partial L}{\partial b_{1}} &= \mathbf{1}^{\top}"):
        assert piece in text, (piece, text)
    names = definitions(text)
    assert len(names) == len(set(names)), names  # every name bound once
    # The shared pre-activation is written once and referred to by name after that.
    assert text.count(r"x W_{1} + b_{1}") == 1
    assert text.count(rf"\max(0, {z})") == 1
    for name in names[:-4]:  # every bound part is used somewhere after its definition
        rest = text.split(f"{name} &=", 1)[1]
        assert name in rest.split("\n", 1)[1], name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mlp_gradient_reads_like_a_textbook(dtype):
    _, grads = mlp(dtype)
    check_mlp_gradient(gc.to_latex(grads))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_optimized_gradient_of_a_compiled_function_too(backend):
    inputs, grads = mlp()
    f = gc.function(list(inputs), grads, backend=backend)
    check_mlp_gradient(gc.to_latex(f.graph))


def test_one_expression_is_returned_bare_with_precedence():
    a, b, c = (gc.placeholder((), "float64", name=n) for n in "abc")
    x = gc.placeholder((3,), "float64", name="x")
    assert gc.to_latex(2 * gc.tanh(x) + 1) == r"2 \tanh(x) + 1"
    assert gc.to_latex((a + b) * c) == r"\left(a + b\right) c"
    assert gc.to_latex(a - (b - c)) == r"a - \left(b - c\right)"
    assert gc.to_latex(-(a + b)) == r"-\left(a + b\right)"
    assert gc.to_latex(a / (b + c)) == r"\frac{a}{b + c}"
    assert gc.to_latex(gc.exp(a) ** 2) == r"\left(e^{a}\right)^{2}"
    assert gc.to_latex(x * x) == r"x \odot x"
    assert gc.to_latex(gc.sigmoid(x).sum()) == r"\textstyle\sum \sigma(x)"


def test_shared_parts_of_a_forward_graph_are_bound_once():
    x = gc.placeholder((3,), "float64", name="x")
    h = gc.tanh(x)
    text = gc.to_latex(h * h + h)
    assert text == "\\begin{aligned}\nh_{1} &= \\tanh(x) \\\\\ny &= h_{1} \\odot h_{1} + h_{1}" \
                   "\n\\end{aligned}"


def test_fresh_names_never_take_a_users_name():
    z1 = gc.placeholder((3,), "float64", name="z1")
    s = z1 + 1
    text = gc.to_latex([s * s, s])
    assert r"z_{2} &= z_{1} + 1" in text
    assert balanced(text)


def test_a_long_chain_is_cut_into_lines():
    x = gc.placeholder((4, 4), "float64", name="x")
    h = x
    for k in range(12):
        h = gc.tanh(h @ gc.parameter(np.eye(4), name=f"W{k}") + 1.0)
    text = gc.to_latex(h.sum())
    assert balanced(text)
    lines = text.splitlines()[1:-1]
    assert len(lines) > 2 and max(len(line) for line in lines) < 250


def test_labels_name_outputs_and_parts():
    x = gc.placeholder((3,), "float64", name="x")
    h = gc.name(gc.exp(x) + 1, "hidden")
    text = gc.to_latex(gc.name(gc.log(h), "loss_terms"))
    assert r"\mathrm{hidden} &= e^{x} + 1" in text
    assert r"\mathrm{loss\_terms} &= \log(\mathrm{hidden})" in text


def test_leaf_names():
    assert leaf_name("W1") == "W_{1}"
    assert leaf_name("W_hh") == "W_{hh}"
    assert leaf_name("x") == "x"
    assert leaf_name("bias_ih_l0") == r"\mathrm{bias\_ih\_l0}"
    assert leaf_name("loss") == r"\mathrm{loss}"
    assert leaf_name("a.b") == "a_{b}"  # characters LaTeX would misread become underscores
    assert leaf_name("2x!") == r"\mathrm{2x\_}"


def test_repr_latex_and_to_sympy():
    a = gc.placeholder((), "float64", name="a")
    t = gc.sin(a) * 2
    assert t._repr_latex_() == f"$${gc.to_latex(t)}$$"
    import sympy as sp
    expr = gc.to_sympy(t)
    (symbol,) = expr.free_symbols
    assert symbol.name == "a" and sp.simplify(expr - 2 * sp.sin(symbol)) == 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="to_latex: expected a Tensor.*int"):
        gc.to_latex(3)
    with pytest.raises(TypeError, match="position 1"):
        gc.to_latex([gc.placeholder((), name="a"), "b"])
    with pytest.raises(ValueError, match="no tensors"):
        gc.to_latex([])
