r"""What a trained RNN computes, read off its dynamics: fixed points and slow
points, the linearisation around them and their stability (Sussillo & Barak
2013, "Opening the black box").

A recurrent cell is a discrete-time map of its state under a constant input
:math:`u`: :math:`h_{t+1} = F(h_t, u)` (`cell.step_with_gates` after
`cell.project`, the layer's own equations). A fixed point is a state
:math:`h^*` with :math:`F(h^*, u) = h^*`; a slow point one where

.. math::

    q(h) = \tfrac{1}{2} \lVert F(h, u) - h \rVert^2

is small. `find_fixed_points` minimises :math:`q` from many candidate states
at once (one compiled program: every candidate, and with a `FitResult` every
member of the run, `vmap`-ed), keeps the points with :math:`q` below
`tol_q`, merges those closer than `tol_unique`, drops outliers far from the
candidates, and linearises around each kept point:

.. math::

    F(h^* + \delta h, u + \delta u) \approx h^* + J_h \, \delta h + J_u \, \delta u,
    \quad J_h = \partial F / \partial h, \quad J_u = \partial F / \partial u .

For this discrete-time map a fixed point is *stable* when every eigenvalue
:math:`\lambda` of :math:`J_h` has :math:`|\lambda| < 1` (every direction
contracts), *unstable* when every one has :math:`|\lambda| > 1`, and a
*saddle* otherwise. An eigenvalue near 1 is a slow direction: a line of
such fixed points is a line attractor (an integrator's memory).

States are vectors: a cell's state structure flattened in its leaf order,
`h` for SimpleRNN and GRU, `[h | c]` for LSTM (`2U`), the cells' states one
after another for stacked cells; `FixedPoints.split` gives them back.

Shapes: `N` candidates, `S` state size, `D` input size (the cell's input:
the features the recurrent layer reads), `K` fixed points kept, `M` members
of a `FitResult`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rnn_jax.cells import RNNCellBase
from rnn_jax.recurrent import RNN, Bidirectional

STABILITY = ("stable", "saddle", "unstable")


# -- finding the cell, and its state as a vector -------------------------------------


def recurrent_cell(model_or_layer, layer=None) -> RNNCellBase:
    """The cell to analyse: `model_or_layer` a cell, a recurrent layer (`RNN`,
    `SimpleRNN`, `GRU`, `LSTM`), or a model (`Sequential`, `Model`) whose
    recurrent layer `layer` (a name or an index into `model.layers`; default:
    the only recurrent layer) is taken. A `Bidirectional` has two maps and is
    refused: analyse its `forward_layer` or `backward_layer`."""
    obj = model_or_layer
    if isinstance(obj, RNNCellBase):
        return obj
    if isinstance(obj, RNN):
        return obj.cell
    if isinstance(obj, Bidirectional):
        raise ValueError("dynamics: a Bidirectional layer runs two maps; pass its "
                         "forward_layer or backward_layer")
    layers = getattr(obj, "layers", None)
    if layers is None:
        raise ValueError(f"dynamics: expected a cell, a recurrent layer or a model, got "
                         f"{type(obj).__name__}")
    if layer is not None:
        chosen = obj.get_layer(name=layer) if isinstance(layer, str) else layers[layer]
        return recurrent_cell(chosen)
    recurrent = [x for x in layers if isinstance(x, (RNN, Bidirectional))]
    if len(recurrent) != 1:
        raise ValueError(f"dynamics: the model has {len(recurrent)} recurrent layers; say which "
                         "with layer= (a name or an index into model.layers)")
    return recurrent_cell(recurrent[0])


def state_sizes(cell: RNNCellBase) -> list[int]:
    """The sizes of the state's leaves in flattening order (LSTM: `[U, U]`)."""
    return [s.shape[-1] for s in jax.tree.leaves(cell.get_initial_state(1))]


def flatten_states(states) -> jax.Array:
    """A cell's state structure (leaves `(..., U_k)`) as one array `(..., S)`."""
    return jnp.concatenate(jax.tree.leaves(states), axis=-1)


def unflatten_states(cell: RNNCellBase, v):
    """`(..., S)` back into the cell's state structure (leaves `(..., U_k)`)."""
    template = cell.get_initial_state(1)
    cuts = np.cumsum(state_sizes(cell))[:-1]
    leaves = jnp.split(v, cuts, axis=-1)
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def step_map(cell: RNNCellBase):
    """`F(params, h (S,), u (D,)) -> (S,)`: one step of the cell as a map of its
    flattened state (no dropout)."""
    def F(params, h, u):
        states = unflatten_states(cell, h[None])
        z = cell.project(params, u[None].astype(h.dtype))
        _, new, _ = cell.step_with_gates(params, z, states)
        return flatten_states(new)[0]

    return F


# -- the result -----------------------------------------------------------------------


@dataclasses.dataclass
class FixedPoints:
    """Fixed (and slow) points of one cell's map, with their linearisation.

    Attributes:
      states: `(K, S)` the points kept (flattened states; `split` for the
        cell's structure).
      q: `(K,)` the residual :math:`q(h^*)` of each.
      candidates: `(K, S)` the candidate each was found from.
      inputs: `(K, D)` the constant input of each.
      jac_state: `(K, S, S)` :math:`J_h = \\partial F / \\partial h` (row i:
        the derivative of output i).
      jac_input: `(K, S, D)` :math:`J_u = \\partial F / \\partial u`.
      eigenvalues: `(K, S)` complex, of `jac_state`, largest magnitude first.
      eigenvectors: `(K, S, S)` complex, column `j` for `eigenvalues[:, j]`.
      stability: `K` labels, `'stable'` / `'saddle'` / `'unstable'`.
      all_q: `(N,)` the residual every candidate reached (before filtering).
      cell: the analysed cell (for `split`).
    """

    states: np.ndarray
    q: np.ndarray
    candidates: np.ndarray
    inputs: np.ndarray
    jac_state: np.ndarray
    jac_input: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    stability: list
    all_q: np.ndarray
    cell: Any = None

    def __len__(self) -> int:
        return len(self.states)

    def count(self, kind: str | None = None) -> int | dict:
        """How many points are `kind` (`'stable'`, `'saddle'`, `'unstable'`), or
        all three counts as a dict."""
        if kind is None:
            return {k: self.stability.count(k) for k in STABILITY}
        if kind not in STABILITY:
            raise ValueError(f"kind must be one of {STABILITY}, got {kind!r}")
        return self.stability.count(kind)

    def split(self, states=None):
        """`states` (default: the fixed points) as the cell's state structure."""
        return unflatten_states(self.cell, jnp.asarray(self.states if states is None
                                                       else states))

    def summary(self) -> str:
        """One line: the counts and the largest eigenvalue magnitude of each kind."""
        counts = self.count()
        parts = [f"{n} {k}" for k, n in counts.items() if n]
        return f"{len(self)} fixed points" + (f" ({', '.join(parts)})" if parts else "")


def classify(eigenvalues) -> list[str]:
    """Stability labels from the eigenvalues `(K, S)` of discrete-time maps."""
    mag = np.abs(np.asarray(eigenvalues))
    return ["stable" if m.max() < 1 else "unstable" if m.min() > 1 else "saddle" for m in mag]


# -- the search ---------------------------------------------------------------------


def _minimize(F, params, h0, u, *, method, learning_rate, max_iters, tol_q):
    """Minimises q over the candidates `h0 (N, S)` with inputs `u (N, D)`:
    `(h (N, S), q (N,), iterations)`."""
    def q_of(h):
        r = jax.vmap(F, in_axes=(None, 0, 0))(params, h, u) - h
        return 0.5 * jnp.sum(r * r, axis=-1)

    if method == "newton":
        eye = jnp.eye(h0.shape[-1], dtype=h0.dtype)

        def update(h, opt_state):
            def one(h_i, u_i):
                r = F(params, h_i, u_i) - h_i
                J = jax.jacfwd(F, argnums=1)(params, h_i, u_i) - eye
                # Levenberg-Marquardt: (J^T J + mu I) dh = -J^T r
                mu = 1e-6 * (1.0 + jnp.sum(r * r))
                return h_i - jnp.linalg.solve(J.T @ J + mu * eye, J.T @ r)
            return jax.vmap(one)(h, u), opt_state, q_of(h)

        opt_state = None
    else:
        optimizer = optax.adam(learning_rate)
        opt_state = optimizer.init(h0)

        def update(h, opt_state):
            q, pullback = jax.vjp(q_of, h)  # q of every candidate, and its gradient
            updates, opt_state = optimizer.update(pullback(jnp.ones_like(q))[0], opt_state, h)
            return optax.apply_updates(h, updates), opt_state, q

    def cond(carry):
        _, _, i, q = carry  # q of the state before the last step
        return (i < max_iters) & (jnp.max(q) > tol_q)

    def body(carry):
        h, opt_state, i, _ = carry
        h, opt_state, q = update(h, opt_state)
        return h, opt_state, i + 1, q

    inf = jnp.full(h0.shape[:1], jnp.inf, h0.dtype)
    h, _, iters, _ = jax.lax.while_loop(cond, body, (h0, opt_state, jnp.int32(0), inf))
    return h, q_of(h), iters


def _jacobians(F, params, h, u):
    """`(J_h (K, S, S), J_u (K, S, D))` at the points `h (K, S)`, inputs `u (K, D)`."""
    jh = jax.vmap(jax.jacfwd(F, argnums=1), in_axes=(None, 0, 0))(params, h, u)
    ju = jax.vmap(jax.jacfwd(F, argnums=2), in_axes=(None, 0, 0))(params, h, u)
    return jh, ju


# The compiled programs, cached per cell configuration (its NNX graph
# definition; cells carry no names, so equally configured cells share them):
# one seed's search, every member's (vmapped), and the Jacobians.


def _cell_search(graphdef, cell_state, h0, u, search):
    cell = nnx.merge(graphdef, cell_state)
    return _minimize(step_map(cell), cell.params(), h0, u, **dict(search))


@functools.partial(jax.jit, static_argnames=("graphdef", "search"))
def _search_one(graphdef, cell_state, h0, u, search):
    return _cell_search(graphdef, cell_state, h0, u, search)


@functools.partial(jax.jit, static_argnames=("graphdef", "search", "one_at_a_time"))
def _search_members(graphdef, cell_states, h0, u, search, one_at_a_time):
    """Every member's search in one program: `vmap`-ed, or on CPU one member
    after another (`lax.map`), which measured faster there: 64 GRU(64) seeds x
    1024 candidates, 100 Adam steps, 4.4 s against 13.4 s `vmap`-ed (XLA's CPU
    backend runs the seed-batched matmuls slowly, as in `fit`)."""
    if not one_at_a_time:
        return jax.vmap(lambda st, a, b: _cell_search(graphdef, st, a, b, search))(
            cell_states, h0, u)
    return jax.lax.map(lambda args: _cell_search(graphdef, *args, search), (cell_states, h0, u))


def _jacobians_of(graphdef, cell_state, h, u):
    cell = nnx.merge(graphdef, cell_state)
    return _jacobians(step_map(cell), cell.params(), h, u)


_cell_jacobians = jax.jit(_jacobians_of, static_argnames=("graphdef",))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _members_jacobians(graphdef, cell_states, h, u):
    return jax.vmap(lambda st, a, b: _jacobians_of(graphdef, st, a, b))(cell_states, h, u)


def _stacked_states(cells):
    """The cells' NNX states stacked on a leading member axis."""
    return jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(c) for c in cells])


def _search_options(options) -> tuple:
    """The search's settings as a hashable static argument."""
    return tuple((k, options[k]) for k in ("method", "learning_rate", "max_iters", "tol_q"))


def _keep(h, q, h0, u, *, tol_q, tol_unique, outlier_distance_scale):
    """Indices of the points kept: `q < tol_q`, one per cluster closer than
    `tol_unique` (the lowest q), none farther from the candidates' centroid than
    `outlier_distance_scale` times the candidates' mean distance from it."""
    idx = np.flatnonzero(q < tol_q)
    if outlier_distance_scale is not None and len(idx):
        centroid = h0.mean(axis=0)
        scale = np.mean(np.linalg.norm(h0 - centroid, axis=1)) or 1.0
        far = np.linalg.norm(h[idx] - centroid, axis=1) > outlier_distance_scale * scale
        idx = idx[~far]
    kept: list[int] = []
    for i in idx[np.argsort(q[idx], kind="stable")]:
        close = [k for k in kept if np.linalg.norm(h[i] - h[k]) <= tol_unique
                 and np.array_equal(u[i], u[k])]
        if not close:
            kept.append(int(i))
    return np.array(sorted(kept), dtype=int)


def _as_rows(a, n, width, what):
    """`a` as `(n, width)`: a `(width,)` row repeated, or `(n, width)` itself."""
    a = np.asarray(a, np.float32)
    if a.ndim == 1:
        a = np.broadcast_to(a, (n, a.shape[0]))
    if a.shape != (n, width):
        raise ValueError(f"find_fixed_points: {what} must be ({width},) or ({n}, {width}), got "
                         f"{np.shape(a)}")
    return a


def find_fixed_points(model_or_layer, inputs, initial_states, *, layer=None,
                      method: str = "adam", learning_rate: float = 1e-2,
                      max_iters: int = 5000, tol_q: float = 1e-10,
                      tol_unique: float = 1e-3, outlier_distance_scale: float | None = 10.0):
    """Fixed points of a cell's map under constant inputs, from many candidates.

    Args:
      model_or_layer: a cell, a recurrent layer or a model (see
        `recurrent_cell`; `layer=` picks the layer in a model), or a
        `rnn_jax.FitResult`: then every member of the run is analysed in the
        same program and a `PopulationFixedPoints` is returned.
      inputs: the constant input `u`: `(D,)` for every candidate, or `(N, D)`
        one per candidate (with a FitResult also `(M, N, D)`).
      initial_states: the candidates `(N, S)` (with a FitResult also
        `(M, N, S)`, e.g. from `sample_states` of each member's trace).
      method: `'adam'` (gradient descent on q with Adam, as Golub & Sussillo's
        FixedPointFinder) or `'newton'` (damped Gauss-Newton on
        :math:`F(h) - h`, faster near a point).
      learning_rate: Adam's step size.
      max_iters: at most this many steps; all candidates stop together when
        every q is below `tol_q`.
      tol_q: a point is kept when its q is below this.
      tol_unique: points closer than this (Euclidean, same input) are one.
      outlier_distance_scale: drop points farther from the candidates'
        centroid than this many times the candidates' mean distance from it
        (None keeps them all).

    Returns:
      `FixedPoints` (or `PopulationFixedPoints` for a FitResult).
    """
    from rnn_jax.training import FitResult

    if method not in ("adam", "newton"):
        raise ValueError(f"method must be 'adam' or 'newton', got {method!r}")
    for name, v in (("max_iters", max_iters),):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    for name, v in (("learning_rate", learning_rate), ("tol_q", tol_q),
                    ("tol_unique", tol_unique)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    options = dict(method=method, learning_rate=learning_rate, max_iters=max_iters,
                   tol_q=tol_q, tol_unique=tol_unique,
                   outlier_distance_scale=outlier_distance_scale)
    if isinstance(model_or_layer, FitResult):
        return _population(model_or_layer, inputs, initial_states, layer, options)
    cell = recurrent_cell(model_or_layer, layer)
    h0, u = _candidates(cell, inputs, initial_states)
    graphdef, state = nnx.split(cell)
    h, q, _ = _search_one(graphdef, state, h0, u, _search_options(options))
    return _result(cell, np.asarray(h), np.asarray(q), h0, u, options)


def _candidates(cell, inputs, initial_states):
    h0 = np.asarray(initial_states, np.float32)
    S = sum(state_sizes(cell))
    if h0.ndim != 2 or h0.shape[1] != S:
        raise ValueError(f"find_fixed_points: initial_states must be (N, {S}) (the cell's "
                         f"flattened state), got {h0.shape}")
    return h0, _as_rows(inputs, h0.shape[0], cell.input_dim, "inputs")


def _result(cell, h, q, h0, u, options) -> FixedPoints:
    keep = _keep(h, q, h0, u, tol_q=options["tol_q"], tol_unique=options["tol_unique"],
                 outlier_distance_scale=options["outlier_distance_scale"])
    S, D = h.shape[1], u.shape[1]
    if len(keep):
        jh, ju = (np.asarray(a) for a in _cell_jacobians(
            *nnx.split(cell), jnp.asarray(h[keep]), jnp.asarray(u[keep])))
        eigenvalues, eigenvectors = np.linalg.eig(jh.astype(np.float64))
        order = np.argsort(-np.abs(eigenvalues), axis=1, kind="stable")
        eigenvalues = np.take_along_axis(eigenvalues, order, axis=1)
        eigenvectors = np.take_along_axis(eigenvectors, order[:, None, :], axis=2)
    else:
        jh, ju = np.zeros((0, S, S), np.float32), np.zeros((0, S, D), np.float32)
        eigenvalues = np.zeros((0, S), complex)
        eigenvectors = np.zeros((0, S, S), complex)
    return FixedPoints(states=h[keep], q=q[keep], candidates=h0[keep], inputs=u[keep],
                       jac_state=jh, jac_input=ju, eigenvalues=eigenvalues,
                       eigenvectors=eigenvectors, stability=classify(eigenvalues),
                       all_q=q, cell=cell)


def linearize(model_or_layer, state, inputs, *, layer=None):
    """The Jacobians of the cell's map at any point: `(J_h, J_u)`, `(S, S)` and
    `(S, D)` for a state `(S,)` and input `(D,)`, or `(N, S, S)`, `(N, S, D)`
    for `(N, S)` states (inputs `(D,)` or `(N, D)`). With a `FitResult`, every
    member's at once: states `(M, N, S)` (or `(N, S)` for all), results
    `(M, N, S, S)` and `(M, N, S, D)`."""
    from rnn_jax.training import FitResult

    if isinstance(model_or_layer, FitResult):
        cells = member_cells(model_or_layer, layer)
        M = len(cells)
        h = np.asarray(state, np.float32)
        h = np.broadcast_to(h, (M, *h.shape)) if h.ndim == 2 else h
        if h.ndim != 3 or h.shape[0] != M:
            raise ValueError(f"linearize: states must be (N, S) or ({M}, N, S), got "
                             f"{np.shape(state)}")
        u = np.asarray(inputs, np.float32)
        u = np.broadcast_to(_as_rows(u, h.shape[1], cells[0].input_dim, "inputs"),
                            (M, h.shape[1], cells[0].input_dim)) if u.ndim < 3 else u
        jh, ju = _members_jacobians(nnx.graphdef(cells[0]), _stacked_states(cells),
                                    jnp.asarray(h), jnp.asarray(u))
        return np.asarray(jh), np.asarray(ju)
    cell = recurrent_cell(model_or_layer, layer)
    h = np.asarray(state, np.float32)
    single = h.ndim == 1
    h = h[None] if single else h
    u = _as_rows(inputs, h.shape[0], cell.input_dim, "inputs")
    if h.shape[1] != sum(state_sizes(cell)):
        raise ValueError(f"linearize: a state has {sum(state_sizes(cell))} entries, got "
                         f"{h.shape}")
    jh, ju = _cell_jacobians(*nnx.split(cell), jnp.asarray(h), jnp.asarray(u))
    jh, ju = np.asarray(jh), np.asarray(ju)
    return (jh[0], ju[0]) if single else (jh, ju)


# -- many members of a run at once ----------------------------------------------------


@dataclasses.dataclass
class PopulationFixedPoints:
    """The fixed points of every member of a `FitResult`, found in one program.

    Attributes:
      per_member: one `FixedPoints` per member, in member order.
      members: the run's members (`{'seed': s, ...}`).
      iterations: the search's steps (all members and candidates together).
    """

    per_member: list
    members: list
    iterations: int

    def __len__(self) -> int:
        return len(self.per_member)

    def __getitem__(self, i) -> FixedPoints:
        return self.per_member[i]

    def counts(self, kind: str = "stable") -> np.ndarray:
        """`(M,)` how many fixed points of `kind` each member has."""
        return np.array([fp.count(kind) for fp in self.per_member])

    def summary(self) -> dict:
        """How many fixed points of each kind per member, and how often each
        count of stable points occurs: `{'stable': [...], 'saddle': [...],
        'unstable': [...], 'stable_histogram': {k: members}}`."""
        out = {k: self.counts(k).tolist() for k in STABILITY}
        values, n = np.unique(self.counts("stable"), return_counts=True)
        out["stable_histogram"] = {int(v): int(c) for v, c in zip(values, n)}
        return out


def member_cells(result, layer=None) -> list:
    """The analysed cell of every member of a `FitResult`, in member order."""
    return [recurrent_cell(result.model(i), layer) for i in range(result.num_members)]


def _population(result, inputs, initial_states, layer, options) -> PopulationFixedPoints:
    cells = member_cells(result, layer)
    M, cell0 = len(cells), cells[0]
    h0 = np.asarray(initial_states, np.float32)
    if h0.ndim == 2:
        h0 = np.broadcast_to(h0, (M, *h0.shape))
    S = sum(state_sizes(cell0))
    if h0.ndim != 3 or h0.shape[0] != M or h0.shape[2] != S:
        raise ValueError(f"find_fixed_points: initial_states must be (N, {S}) or ({M}, N, {S}) "
                         f"for {M} members, got {np.shape(initial_states)}")
    N = h0.shape[1]
    u = np.asarray(inputs, np.float32)
    if u.ndim < 3:
        u = np.broadcast_to(_as_rows(u, N, cell0.input_dim, "inputs"), (M, N, cell0.input_dim))
    if u.shape != (M, N, cell0.input_dim):
        raise ValueError(f"find_fixed_points: inputs must be ({cell0.input_dim},), "
                         f"({N}, {cell0.input_dim}) or ({M}, {N}, {cell0.input_dim}), got "
                         f"{np.shape(inputs)}")
    graphdef, states = nnx.graphdef(cell0), _stacked_states(cells)
    h, q, iters = (np.asarray(a) for a in _search_members(
        graphdef, states, jnp.asarray(h0), jnp.asarray(u), _search_options(options),
        one_at_a_time=jax.default_backend() == "cpu"))
    per_member = [_result(cells[i], h[i], q[i], h0[i], u[i], options) for i in range(M)]
    return PopulationFixedPoints(per_member, list(result.members), int(np.max(iters)))


# -- candidates from trajectories -----------------------------------------------------


def trajectories(model, x, *, layer=None, mask=None) -> list:
    """The analysed layer's cells' `readout.LayerTrace`s on inputs `x` (the
    model's own inputs: the layers before the recurrent one run first)."""
    from rnn_jax import readout

    traces = readout.trace_states(model, x, mask=mask)
    cell = recurrent_cell(model, layer)
    layers = getattr(model, "layers", [model])
    index = next(i for i, lay in enumerate(layers)
                 if isinstance(lay, RNN) and lay.cell is cell)
    return [t for t in traces if t.layer_index == index]


def sample_states(trace, n: int, mask=None, noise: float = 0.0, key=None, *, x=None,
                  layer=None) -> np.ndarray:
    """`n` candidate states `(n, S)` drawn from recorded trajectories.

    Args:
      trace: a `readout.LayerTrace` (one cell), or the list of a stack's
        traces (one per cell, in order: their states are concatenated as
        the stack's state vector); or a `FitResult` with `x=` the inputs to
        trace every member on (and `layer=` as in `recurrent_cell`): then
        `(M, n, S)`, each member's candidates from its own trajectories.
      n: how many (drawn without replacement when there are enough steps).
      mask: `(B, T)` bool, the steps that may be drawn (default: the trace's
        own mask, else every step); with a FitResult, the mask given with `x`.
      noise: standard deviation of Gaussian noise added to each draw (to
        start the search near, not on, the trajectories).
      key: a `jax.random` key (required).
    """
    from rnn_jax.training import FitResult

    if key is None:
        raise ValueError("sample_states needs key=jax.random.key(seed)")
    if isinstance(trace, FitResult):
        if x is None:
            raise ValueError("sample_states of a FitResult needs x=, the inputs to trace")
        keys = jax.random.split(key, trace.num_members)
        return np.stack([sample_states(trajectories(trace.model(i), x, layer=layer, mask=mask),
                                       n, None, noise, keys[i])
                         for i in range(trace.num_members)])
    traces = list(trace) if isinstance(trace, (list, tuple)) else [trace]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sample_states: n must be a positive integer, got {n!r}")
    if noise < 0:
        raise ValueError(f"sample_states: noise must be >= 0, got {noise}")
    states = np.concatenate([np.concatenate([t.states[k] for k in t.states], axis=-1)
                             for t in traces], axis=-1)  # (B, T, S): h, then c
    if mask is None:
        mask = traces[0].mask
    valid = (np.ones(states.shape[:2], bool) if mask is None else np.asarray(mask, bool))
    if valid.shape != states.shape[:2]:
        raise ValueError(f"sample_states: mask must be {states.shape[:2]}, got {valid.shape}")
    pool = states[valid]
    if not len(pool):
        raise ValueError("sample_states: the mask leaves no step to draw from")
    k_pick, k_noise = jax.random.split(key)
    pick = np.asarray(jax.random.choice(k_pick, len(pool), (n,), replace=n > len(pool)))
    out = pool[pick].astype(np.float32)
    if noise:
        out = out + noise * np.asarray(jax.random.normal(k_noise, out.shape), np.float32)
    return out


__all__ = ["FixedPoints", "PopulationFixedPoints", "STABILITY", "classify",
           "find_fixed_points", "flatten_states", "linearize", "member_cells", "recurrent_cell",
           "sample_states", "state_sizes", "step_map", "trajectories", "unflatten_states"]
