"""A computational graph, as the lectures draw it: every value remembers the operation that made it and
the values it came from, and `backward()` applies the chain rule from the output back to every input.

Two kinds of node, one idea (Karpathy's micrograd, 2020; Rumelhart, Hinton & Williams 1986):
- `Value`, a scalar: +, -, *, /, ** (by a number), exp, log, tanh, sigmoid, relu;
- `Tensor`, a NumPy array: the same elementwise ops with broadcasting, `@` (matrix product), sum, mean.

Each operation builds its output node and a small `_backward` closure that knows the local derivative:
for out = f(a, b) it adds d out/d a * out.grad to a.grad, and likewise for b. `root.backward()` visits the
nodes in reverse topological order, so a node's grad is complete before it is passed on.

Semantics, chosen so that a reader can trust the numbers:
- a node used twice (x * x, or h feeding two layers) gets both contributions, because the chain rule sums
  over every path from the output; that is why every `_backward` adds (+=) instead of assigning;
- `backward()` computes d root/d node from scratch: it first zeroes the grad of every node in root's
  graph, so calling it twice gives the same grads (micrograd issue #53, where the second call doubled
  them). A leaf shared by two graphs holds the gradient of the root whose backward ran last.

`draw(root, path)` writes the graph as an SVG or PNG figure: inputs on the left, the output on the
right, each node a box with its label, value and (in red) gradient, each operation a circle.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from trainlab.errors import ConfigError
from trainlab.io import atomic_write_bytes


class Node:
    """What the two node kinds share: the graph structure and the backward pass."""

    def __init__(self, children: tuple[Node, ...], op: str, label: str):
        self._children = children  # the nodes this one was computed from
        self._op = op  # the operation that made it ("" for an input)
        self._backward = lambda: None  # adds this node's grad into its children's (set by each op)
        self.label = label

    def topological_order(self) -> list[Node]:
        """Every node this one depends on, each listed after all of its inputs (depth-first post-order).
        Written with an explicit stack, not recursion, so that a chain of thousands of ops works."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, inputs_done = stack.pop()
            if inputs_done:
                order.append(node)
            elif node not in seen:
                seen.add(node)
                stack.append((node, True))  # comes off the stack again after all of its inputs
                stack.extend((child, False) for child in node._children)
        return order

    def backward(self) -> None:
        """d self / d node for every node in the graph, in `node.grad`: zero every grad, seed
        d self / d self = 1, then apply each node's local chain rule, output first."""
        order = self.topological_order()
        for node in order:
            node.grad = node._zeros()
        self.grad = self._zeros() + 1  # for a non-scalar root: the gradient of its sum
        for node in reversed(order):
            node._backward()

    def _zeros(self):
        raise NotImplementedError

    def _describe(self) -> tuple[str, str]:
        """(value, gradient) as short text for `draw`."""
        raise NotImplementedError


class Value(Node):
    """A scalar in the graph: `data` is its value, `grad` is d root/d self after `root.backward()`."""

    def __init__(self, data: float, children: tuple[Node, ...] = (), op: str = "", label: str = ""):
        super().__init__(children, op, label)
        self.data = float(data)
        self.grad = 0.0

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    def _zeros(self) -> float:
        return 0.0

    def _describe(self) -> tuple[str, str]:
        return f"{self.data:.4g}", f"{self.grad:.4g}"

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():  # d(a + b)/da = d(a + b)/db = 1: an add gate passes the gradient on
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():  # d(ab)/da = b: a multiply gate swaps its inputs
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: float) -> Value:
        if not isinstance(k, (int, float)):
            raise TypeError(f"Value ** {type(k).__name__}: the exponent must be a number")
        out = Value(self.data**k, (self,), f"**{k:g}")

        def _backward():  # d(x^k)/dx = k x^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def exp(self) -> Value:
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():  # d e^x/dx = e^x
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> Value:
        out = Value(math.log(self.data), (self,), "log")

        def _backward():  # d ln x/dx = 1/x
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():  # tanh' = 1 - tanh^2
            self.grad += (1 - out.data**2) * out.grad

        out._backward = _backward
        return out

    def sigmoid(self) -> Value:
        x = self.data  # two forms of 1/(1 + e^-x), so that e^|x| never overflows
        s = 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
        out = Value(s, (self,), "sigmoid")

        def _backward():  # sigma' = sigma (1 - sigma)
            self.grad += out.data * (1 - out.data) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():  # 1 where x > 0, else 0 (0 at the kink x = 0, as in PyTorch)
            self.grad += (self.data > 0) * out.grad

        out._backward = _backward
        return out

    # Composed from the ops above, so they need no backward of their own.
    def __neg__(self) -> Value:
        return self * -1

    def __sub__(self, other: Value | float) -> Value:
        return self + (-other)

    def __truediv__(self, other: Value | float) -> Value:
        return self * other**-1

    def __radd__(self, other: float) -> Value:
        return self + other

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __rsub__(self, other: float) -> Value:
        return Value(other) - self

    def __rtruediv__(self, other: float) -> Value:
        return Value(other) / self


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`: an input that NumPy broadcast was used once per copy, so its gradient
    is the sum over the copies (the leading axes it lacked and the axes where it had size 1)."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


class Tensor(Node):
    """A NumPy array in the graph: `data` is its value, `grad` is d root/d self (same shape)."""

    def __init__(self, data, children: tuple[Node, ...] = (), op: str = "", label: str = ""):
        super().__init__(children, op, label)
        data = np.asarray(data)
        self.data = data if np.issubdtype(data.dtype, np.floating) else data.astype(np.float64)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Tensor(shape={self.data.shape}, op={self._op!r})"

    def _zeros(self) -> np.ndarray:
        return np.zeros_like(self.data)

    def _describe(self) -> tuple[str, str]:
        def text(a: np.ndarray) -> str:
            if a.size <= 3:
                return "[" + ", ".join(f"{v:.3g}" for v in a.ravel()) + "]"
            return f"{a.shape} mean {a.mean():.3g}"

        return text(self.data), text(self.grad)

    def __add__(self, other: Tensor | float | np.ndarray) -> Tensor:
        other = other if isinstance(other, Tensor) else Tensor(other)
        out = Tensor(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += unbroadcast(out.grad, self.data.shape)
            other.grad += unbroadcast(out.grad, other.data.shape)

        out._backward = _backward
        return out

    def __mul__(self, other: Tensor | float | np.ndarray) -> Tensor:
        other = other if isinstance(other, Tensor) else Tensor(other)
        out = Tensor(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += unbroadcast(other.data * out.grad, self.data.shape)
            other.grad += unbroadcast(self.data * out.grad, other.data.shape)

        out._backward = _backward
        return out

    def __matmul__(self, other: Tensor) -> Tensor:
        """(n, k) @ (k, m), the lectures' x.dot(W)."""
        out = Tensor(self.data @ other.data, (self, other), "@")

        def _backward():  # d(XW)/dX = dout W^T, d(XW)/dW = X^T dout
            self.grad += out.grad @ other.data.T
            other.grad += self.data.T @ out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: float) -> Tensor:
        if not isinstance(k, (int, float)):
            raise TypeError(f"Tensor ** {type(k).__name__}: the exponent must be a number")
        out = Tensor(self.data**k, (self,), f"**{k:g}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def sum(self, axis: int | tuple[int, ...] | None = None) -> Tensor:
        out = Tensor(self.data.sum(axis=axis), (self,), "sum")

        def _backward():  # every summed element gets the output's gradient
            grad = out.grad if axis is None else np.expand_dims(out.grad, axis)
            self.grad += np.broadcast_to(grad, self.data.shape)

        out._backward = _backward
        return out

    def mean(self, axis: int | tuple[int, ...] | None = None) -> Tensor:
        out = Tensor(self.data.mean(axis=axis), (self,), "mean")
        n = self.data.size // out.data.size  # how many elements each output averages

        def _backward():  # every averaged element gets 1/n of the output's gradient
            grad = out.grad if axis is None else np.expand_dims(out.grad, axis)
            self.grad += np.broadcast_to(grad, self.data.shape) / n

        out._backward = _backward
        return out

    def _elementwise(self, value: np.ndarray, derivative: np.ndarray, op: str) -> Tensor:
        """out = f(self) elementwise, with f'(self) given: the chain rule is one multiply."""
        out = Tensor(value, (self,), op)

        def _backward():
            self.grad += derivative * out.grad

        out._backward = _backward
        return out

    def exp(self) -> Tensor:
        e = np.exp(self.data)
        return self._elementwise(e, e, "exp")

    def log(self) -> Tensor:
        return self._elementwise(np.log(self.data), 1 / self.data, "log")

    def tanh(self) -> Tensor:
        t = np.tanh(self.data)
        return self._elementwise(t, 1 - t**2, "tanh")

    def sigmoid(self) -> Tensor:
        s = np.exp(-np.logaddexp(0, -self.data))  # 1/(1 + e^-x) without overflow
        return self._elementwise(s, s * (1 - s), "sigmoid")

    def relu(self) -> Tensor:
        return self._elementwise(np.maximum(self.data, 0), (self.data > 0).astype(self.data.dtype), "relu")

    def __neg__(self) -> Tensor:
        return self * -1.0

    def __sub__(self, other: Tensor | float | np.ndarray) -> Tensor:
        return self + (-(other if isinstance(other, Tensor) else Tensor(other)))

    def __truediv__(self, other: Tensor | float | np.ndarray) -> Tensor:
        return self * (other if isinstance(other, Tensor) else Tensor(other)) ** -1

    def __radd__(self, other: float | np.ndarray) -> Tensor:
        return self + other

    def __rmul__(self, other: float | np.ndarray) -> Tensor:
        return self * other

    def __rsub__(self, other: float | np.ndarray) -> Tensor:
        return Tensor(other) - self


# Figure geometry, in data units (the axes keep x and y to the same scale).
COLUMN = 3.0  # from one node to the next, with the op circle halfway
ROW = 1.3
BOX_W, BOX_H = 1.9, 0.95
OP_R = 0.3
INCHES_PER_UNIT = 0.75


def layout(root: Node) -> dict[Node, tuple[float, float]]:
    """Where `draw` puts each node, in topological order. Columns run left to right: an op node one
    column right of its furthest input, an input just left of its first use. Rows are filled right to
    left, each node level with the mean height of the nodes it feeds, so that few edges cross."""
    order = root.topological_order()
    users: dict[Node, list[Node]] = {node: [] for node in order}
    for node in order:
        for child in node._children:
            users[child].append(node)
    column = {}
    for node in order:
        column[node] = 1 + max((column[c] for c in node._children), default=-1)
    for node in order:
        if not node._children and users[node]:
            column[node] = min(column[u] for u in users[node]) - 1
    y: dict[Node, float] = {}
    for col in range(max(column.values()), -1, -1):
        nodes = [n for n in order if column[n] == col]
        nodes.sort(key=lambda n: -sum(y[u] for u in users[n]) / max(1, len(users[n])))
        for i, node in enumerate(nodes):
            y[node] = ((len(nodes) - 1) / 2 - i) * ROW
    return {node: (column[node] * COLUMN, y[node]) for node in order}


def draw(root: Node, path: Path | str) -> Path:
    """Draw root's graph to `path`, an .svg or .png (by suffix): inputs left, root right; each node a box
    with label, value and gradient (red), each op a circle. Returns the path. Uses matplotlib only, and
    imports it here, so that importing the graph does not."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise ConfigError(f"graph figure {path}: suffix {path.suffix!r} is not .svg or .png")
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyBboxPatch

    xy = layout(root)
    order = list(xy)
    width = max(x for x, _ in xy.values()) + BOX_W + 0.4
    height = 2 * max(abs(y) for _, y in xy.values()) + BOX_H + 1.0  # room for bent edges
    fig = Figure(figsize=(width * INCHES_PER_UNIT, height * INCHES_PER_UNIT))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-BOX_W / 2 - 0.2, width - BOX_W / 2 - 0.2)
    ax.set_ylim(-height / 2, height / 2)
    ax.set_aspect("equal")
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", color="0.35", lw=0.8, shrinkA=0, shrinkB=0)
    for node in order:
        x, y = xy[node]
        ax.add_patch(
            FancyBboxPatch(
                (x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H, boxstyle="round,pad=0,rounding_size=0.1",
                fc="white", ec="0.2", lw=0.8,
            )
        )  # fmt: skip
        value, grad = node._describe()
        ax.text(x, y + 0.27, node.label, ha="center", va="center", fontsize=8, weight="bold")
        ax.text(x, y, f"data {value}", ha="center", va="center", fontsize=7.5)
        ax.text(x, y - 0.27, f"grad {grad}", ha="center", va="center", fontsize=7.5, color="tab:red")
        if node._op:  # the op circle halfway back to the inputs, with an arrow from each input
            ox = x - COLUMN / 2
            ax.add_patch(Circle((ox, y), OP_R, fc="0.92", ec="0.2", lw=0.8))
            ax.text(ox, y, node._op, ha="center", va="center", fontsize=8)
            ax.annotate("", (x - BOX_W / 2, y), (ox + OP_R, y), arrowprops=arrow)
            for i, child in enumerate(node._children):
                cx, cy = xy[child]
                # Bend an edge that skips a column (it would cross the boxes between) and the second
                # edge of an input used twice (x * x), so that both contributions show.
                bends = node._children[:i].count(child) + (ox - cx > COLUMN)
                curve = dict(connectionstyle=f"arc3,rad={-0.3 * bends}", shrinkB=OP_R * INCHES_PER_UNIT * 72)
                ax.annotate("", (ox, y), (cx + BOX_W / 2, cy), arrowprops=arrow | curve)

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep SVG text as text, searchable
        fig.savefig(buffer, format=fmt, dpi=150)
    atomic_write_bytes(path, buffer.getvalue())
    return path
