"""The computational graph: values and gradients against PyTorch autograd (micrograd's own test, on
random expressions), backward twice, a node used twice, and the figure it draws."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.errors import ConfigError
from trainlab.scratch.graph import Tensor, Value, draw

# float64 on both sides. The two engines round the same IEEE operations, except that libm (Python's math)
# and PyTorch may differ by an ulp (1.1e-16 relative) in exp, log, tanh and pow; chains of a few dozen
# ops keep that far below 1e-10.
RTOL, ATOL = 1e-10, 1e-12

# Each op takes a Value or a torch tensor the same way, so one expression builds both graphs. Domains are
# kept valid (log and ** of a positive number, division by at least 1).
UNARY = [
    lambda a: -a,
    lambda a: a.tanh(),
    lambda a: a.sigmoid(),
    lambda a: a.relu(),
    lambda a: a.tanh().exp(),
    lambda a: (a * a + 1).log(),
    lambda a: (a * a + 0.5) ** 1.5,
    lambda a: a**3,
    lambda a: 2.0 + a,
    lambda a: 1.0 - a,
    lambda a: 3.0 * a,
    lambda a: 1.0 / (a * a + 1),
    lambda a: a / 4,
]
BINARY = [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a / (b * b + 1),
]


@st.composite
def expressions(draw_):
    """Leaf values and a program: each step applies an op to nodes made so far (so nodes get reused)."""
    leaves = draw_(st.lists(st.floats(-2, 2, allow_nan=False), min_size=1, max_size=4))
    steps = []
    for made in range(len(leaves), len(leaves) + draw_(st.integers(1, 10))):
        i, j = draw_(st.integers(0, made - 1)), draw_(st.integers(0, made - 1))
        if draw_(st.booleans()):
            steps.append((UNARY[draw_(st.integers(0, len(UNARY) - 1))], (i,)))
        else:
            steps.append((BINARY[draw_(st.integers(0, len(BINARY) - 1))], (i, j)))
    return leaves, steps


def run(program, leaves):
    nodes = list(leaves)
    for op, args in program:
        nodes.append(op(*(nodes[i] for i in args)))
    return nodes[-1]


@settings(max_examples=150, deadline=None)
@given(expressions())
def test_value_and_grads_match_torch_on_random_expressions(expression):
    leaves, program = expression
    ours = [Value(v) for v in leaves]
    theirs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in leaves]
    out, out_t = run(program, ours), run(program, theirs)
    out.backward()
    out_t.backward()
    np.testing.assert_allclose(out.data, out_t.item(), rtol=RTOL, atol=ATOL)
    grads_t = [0.0 if t.grad is None else t.grad.item() for t in theirs]  # None: root does not use it
    np.testing.assert_allclose([v.grad for v in ours], grads_t, rtol=RTOL, atol=ATOL)


def test_the_lectures_neuron():
    """micrograd's neuron: o = tanh(x1 w1 + x2 w2 + b) with b chosen so that o = 1/sqrt(2), hence
    do/dn = 1 - o^2 = 1/2 and each input's grad is 1/2 times its partner weight or input."""
    x1, x2, w1, w2 = Value(2.0), Value(0.0), Value(-3.0), Value(1.0)
    b = Value(6.8813735870195432)
    o = (x1 * w1 + x2 * w2 + b).tanh()
    o.backward()
    assert o.data == pytest.approx(2**-0.5, abs=1e-15)
    assert [x1.grad, x2.grad, w1.grad, w2.grad, b.grad] == pytest.approx(
        [-1.5, 0.5, 1.0, 0.0, 0.5], abs=1e-14
    )


def test_backward_twice_gives_the_same_grads():
    """micrograd #53: there the second call added to the first call's grads and doubled them."""
    a, b = Value(1.5), Value(-0.5)
    y = (a * b + a.exp()).tanh()
    y.backward()
    first = [a.grad, b.grad, y.grad]
    y.backward()
    assert [a.grad, b.grad, y.grad] == first
    s = 1 - y.data**2
    assert first == pytest.approx([s * (b.data + np.exp(a.data)), s * a.data, 1.0], rel=1e-14)

    X, W = Tensor(np.arange(6.0).reshape(2, 3) / 6), Tensor(np.ones((3, 2)))
    loss = (X @ W).tanh().sum()
    loss.backward()
    first = W.grad.copy()
    loss.backward()
    np.testing.assert_array_equal(W.grad, first)
    np.testing.assert_allclose(first, X.data.T @ (1 - np.tanh(X.data @ W.data) ** 2), rtol=1e-14)


def test_a_node_used_twice_receives_both_contributions():
    a = Value(3.0)
    y = a * a + a  # dy/da = 2a + 1 = 7: the product alone contributes a twice
    y.backward()
    assert a.grad == 7.0

    x = Tensor(np.array([[-1.0, 0.5], [2.0, 0.0]]))
    h = x.tanh()
    (h * h + h).sum().backward()  # h feeds three edges
    np.testing.assert_allclose(x.grad, (2 * h.data + 1) * (1 - h.data**2), rtol=1e-14)


def test_a_deep_graph_does_not_hit_the_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(3 * sys.getrecursionlimit()):
        y = y + x
    y.backward()
    assert x.grad == 3 * sys.getrecursionlimit() + 1


def mlp_loss(X, W1, b1, W2, b2, Y):
    """A small network in whatever engine its inputs belong to: broadcasting adds, @, every
    elementwise op, sum and mean along an axis and over everything."""
    h = (X @ W1 + b1).tanh()
    z = h @ W2 + b2
    return (
        ((z - Y) ** 2).mean()
        + (h.sigmoid() * h).sum(0).mean() / 3
        + (1.0 - z.exp().mean(1)).relu().sum()
        + (z * z + 1).log().sum()
        - (W1 * W1).sum() * 0.01
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_tensor_graph_matches_torch(n, d, m, k, seed):
    rng = np.random.default_rng(seed)
    shapes = [(n, d), (d, m), (m,), (m, k), (1, k), (n, k)]  # b1 (m,) and b2 (1, k) broadcast
    arrays = [rng.standard_normal(s) for s in shapes]
    ours = [Tensor(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    loss, loss_t = mlp_loss(*ours), mlp_loss(*theirs)
    loss.backward()
    loss_t.backward()
    np.testing.assert_allclose(loss.data, loss_t.item(), rtol=RTOL, atol=ATOL)
    for t, t_t in zip(ours, theirs):
        assert t.grad.shape == t.data.shape
        np.testing.assert_allclose(t.grad, t_t.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shape_a,shape_b", [((3, 1), (1, 4)), ((4,), (3, 4)), ((), (2, 3)), ((2, 1, 3), (4, 1))]
)
def test_broadcast_add_sums_the_gradient_over_the_copies(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = Tensor(rng.standard_normal(shape_a)), Tensor(rng.standard_normal(shape_b))
    out = a * b + a
    weights = rng.standard_normal(out.data.shape)
    (out * weights).sum().backward()
    a_t, b_t = (torch.tensor(t.data, requires_grad=True) for t in (a, b))
    ((a_t * b_t + a_t) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(a.grad, a_t.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(b.grad, b_t.grad.numpy(), rtol=RTOL, atol=ATOL)


def neuron():
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2, b = Value(-3.0, label="w1"), Value(1.0, label="w2"), Value(6.8813735870195432, label="b")
    n = x1 * w1 + x2 * w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    o.backward()
    return o


def test_draw_writes_an_svg_with_every_label_value_and_gradient(tmp_path):
    path = draw(neuron(), tmp_path / "neuron.svg")
    texts = [el.text for el in ET.parse(path).iter() if el.tag.endswith("text") and el.text]
    for expected in ["x1", "w1", "b", "n", "o", "tanh", "*", "+", "data 0.7071", "grad -1.5", "grad 0.5"]:
        assert expected in texts
    assert texts.count("*") == 2 and texts.count("+") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["neuron.svg"]  # no temporary file left behind


def test_draw_writes_a_png_of_a_tensor_graph(tmp_path):
    from matplotlib.image import imread

    X, W = Tensor(np.ones((4, 3)), label="X"), Tensor(np.ones((3, 2)), label="W")
    loss = (X @ W).relu().mean()
    loss.backward()
    path = draw(loss, tmp_path / "mlp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 2 * image.shape[0]  # 4 columns of nodes side by side
    assert (image[..., :3] < 0.5).any()  # something is drawn in dark ink


def test_draw_rejects_other_suffixes(tmp_path):
    with pytest.raises(ConfigError, match=r"graph.pdf.*\.svg or \.png"):
        draw(neuron(), tmp_path / "graph.pdf")


def test_importing_the_graph_imports_neither_matplotlib_nor_torch():
    code = "import sys, trainlab.scratch.graph; print(sorted({'matplotlib', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
