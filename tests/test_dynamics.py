"""rnn_jax.dynamics against independent references: closed forms of fixed
points, JAX's own derivative of the cell's Keras-style call, a hand-built
cell with known fixed points, and per-member runs for a population."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R
from rnn_jax import dynamics, plots

FAST = {}


def linear_cell(units, inputs, radius, seed=0):
    """A linear SimpleRNN cell whose recurrent kernel has spectral radius `radius`."""
    cell = R.SimpleRNNCell(units, activation="linear", rngs=nnx.Rngs(seed), input_shape=(inputs,))
    W, U, b = cell.get_weights()
    rng = np.random.default_rng(seed)
    U = rng.normal(size=U.shape).astype(np.float32)
    U *= radius / np.max(np.abs(np.linalg.eigvals(U)))
    b = rng.normal(size=b.shape).astype(np.float32)
    cell.set_weights([W, U, b])
    return cell


@pytest.mark.parametrize("radius,label", [(0.7, "stable"), (1.6, None)])
@pytest.mark.parametrize("method", ["adam", "newton"])
def test_linear_simple_rnn_fixed_point_is_the_closed_form(radius, label, method):
    # h_t = x_t W + h_{t-1} U + b (row vectors): h* = (u W + b)(I - U)^-1, the
    # column form (I - U^T)^-1 (W^T u + b); stable iff every |eig(U)| < 1.
    units, inputs = 5, 3
    cell = linear_cell(units, inputs, radius)
    W, U, b = (np.asarray(w, np.float64) for w in cell.get_weights())
    u = np.array([0.4, -1.0, 0.25])
    want = (u @ W + b) @ np.linalg.inv(np.eye(units) - U)
    h0 = np.random.default_rng(1).normal(size=(12, units))
    fp = dynamics.find_fixed_points(cell, u, h0, method=method, max_iters=20000, tol_q=1e-11,
                                    learning_rate=0.05, outlier_distance_scale=None)
    assert len(fp) == 1
    np.testing.assert_allclose(fp.states[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fp.jac_state[0], U.T, rtol=1e-6, atol=1e-6)  # dF_i/dh_j = U[j, i]
    np.testing.assert_allclose(fp.jac_input[0], W.T, rtol=1e-6, atol=1e-6)
    mags = np.sort(np.abs(np.linalg.eigvals(U)))[::-1]
    np.testing.assert_allclose(np.abs(fp.eigenvalues[0]), mags, rtol=1e-5)
    expected = label or ("unstable" if mags.min() > 1 else "saddle")
    assert fp.stability == [expected]


def step_by_call(cell):
    """F(h, u) from the cell's own Keras-style call (an independent path from
    `dynamics.step_map`), on flattened states."""
    def F(h, u):
        states = dynamics.unflatten_states(cell, h[None])
        states = list(states) if isinstance(cell, R.StackedRNNCells) else states
        _, new = cell(u[None], states)
        return dynamics.flatten_states(new)[0]
    return F


CELLS = {
    "simple_rnn": lambda: R.SimpleRNNCell(4, rngs=nnx.Rngs(0), input_shape=(3,)),
    "gru": lambda: R.GRUCell(4, rngs=nnx.Rngs(1), input_shape=(3,)),
    "gru_reset_before": lambda: R.GRUCell(4, reset_after=False, rngs=nnx.Rngs(2),
                                          input_shape=(3,)),
    "lstm": lambda: R.LSTMCell(4, rngs=nnx.Rngs(3), input_shape=(3,)),
    "stacked": lambda: R.StackedRNNCells([R.LSTMCell(3, rngs=nnx.Rngs(4), input_shape=(3,)),
                                          R.GRUCell(2, rngs=nnx.Rngs(5), input_shape=(3,))]),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_jacobians_are_jacfwd_of_the_cells_call(name):
    cell = CELLS[name]()
    S = sum(dynamics.state_sizes(cell))
    rng = np.random.default_rng(7)
    h = rng.normal(size=(5, S)).astype(np.float32) * 0.5
    u = rng.normal(size=(5, 3)).astype(np.float32)
    jh, ju = dynamics.linearize(cell, h, u)
    F = step_by_call(cell)
    want_h = jax.jit(jax.vmap(jax.jacfwd(F, argnums=0)))(h, u)  # traced once, not per sample
    want_u = jax.jit(jax.vmap(jax.jacfwd(F, argnums=1)))(h, u)
    np.testing.assert_allclose(jh, want_h, atol=1e-5)
    np.testing.assert_allclose(ju, want_u, atol=1e-5)
    one_h, one_u = dynamics.linearize(cell, h[0], u[0])
    np.testing.assert_allclose(one_h, jh[0], atol=1e-6)
    assert one_u.shape == (S, 3)


@pytest.mark.parametrize("name", ["lstm", "stacked", "gru"])
def test_fixed_points_of_every_cell_are_fixed_under_the_cells_call(name):
    # With zero input, F(h*, 0) = h* for every point found (checked through the
    # cell's own call), and split() gives the cell's state structure back.
    cell = CELLS[name]()
    S = sum(dynamics.state_sizes(cell))
    h0 = np.random.default_rng(3).normal(size=(32, S)).astype(np.float32)
    fp = dynamics.find_fixed_points(cell, np.zeros(3), h0, method="newton", max_iters=200,
                                    tol_q=1e-12)
    assert len(fp) >= 1
    F = step_by_call(cell)
    for h in fp.states:
        np.testing.assert_allclose(F(jnp.asarray(h), jnp.zeros(3)), h, atol=1e-5)
    split = fp.split()
    assert jax.tree.structure(split) == jax.tree.structure(cell.get_initial_state(1))
    np.testing.assert_allclose(dynamics.flatten_states(split), fp.states)


def tanh_fixed_point(w):
    """The positive root of h = tanh(w h), w > 1, by bisection."""
    lo, hi = 1e-9, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.tanh(w * mid) > mid else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("w", [1.5, 3.0])
def test_one_unit_tanh_cell_has_three_fixed_points(w):
    # h = tanh(w h) for w > 1: 0 (slope w > 1: unstable) and +-h* (slope
    # w (1 - h*^2) < 1: stable).
    cell = R.SimpleRNNCell(1, rngs=nnx.Rngs(0), input_shape=(1,))
    cell.set_weights([np.zeros((1, 1), np.float32), np.array([[w]], np.float32),
                      np.zeros(1, np.float32)])
    h0 = np.linspace(-1.2, 1.2, 25)[:, None]
    fp = dynamics.find_fixed_points(cell, np.zeros(1), h0, method="newton", max_iters=100,
                                    tol_q=1e-13)
    hs = tanh_fixed_point(w)
    order = np.argsort(fp.states[:, 0])
    np.testing.assert_allclose(fp.states[order, 0], [-hs, 0.0, hs], atol=1e-5)
    assert [fp.stability[i] for i in order] == ["stable", "unstable", "stable"]
    slopes = [w * (1 - hs ** 2), w, w * (1 - hs ** 2)]
    np.testing.assert_allclose(np.abs(fp.eigenvalues[order, 0]), slopes, rtol=1e-4)
    assert fp.count() == {"stable": 2, "saddle": 0, "unstable": 1}


def test_uniqueness_and_outliers():
    # Every candidate converges to the one fixed point: one is kept. With an
    # outlier scale that excludes it, none is.
    cell = linear_cell(3, 2, 0.5)
    h0 = np.random.default_rng(0).normal(size=(20, 3)) * 0.01
    fp = dynamics.find_fixed_points(cell, np.zeros(2), h0, tol_q=1e-10, max_iters=20000,
                                    learning_rate=0.05, outlier_distance_scale=None)
    assert len(fp) == 1 and len(fp.all_q) == 20 and np.all(fp.all_q < 1e-10)
    far = dynamics.find_fixed_points(cell, np.zeros(2), h0, tol_q=1e-10, max_iters=20000,
                                     learning_rate=0.05, outlier_distance_scale=1.0)
    centroid_distance = np.linalg.norm(fp.states[0] - h0.mean(axis=0))
    spread = np.mean(np.linalg.norm(h0 - h0.mean(axis=0), axis=1))
    assert (len(far) == 0) == (centroid_distance > spread)


def test_sample_states_respects_the_mask_and_the_key():
    from rnn_jax import readout

    layer = R.LSTM(3, return_sequences=True, rngs=nnx.Rngs(0), input_shape=(6, 2))
    x = np.random.default_rng(0).normal(size=(4, 6, 2)).astype(np.float32)
    mask = np.zeros((4, 6), bool)
    mask[1, 2] = mask[3, 5] = True
    trace = readout.trace_states(layer, x, mask=mask)[0]
    got = dynamics.sample_states(trace, 50, key=jax.random.key(1))  # the trace's own mask
    allowed = np.concatenate([trace.states["h"], trace.states["c"]], -1)[mask]  # (2, 6)
    assert got.shape == (50, 6)
    assert all(any(np.array_equal(g, a) for a in allowed) for g in got)
    again = dynamics.sample_states(trace, 50, key=jax.random.key(1))
    np.testing.assert_array_equal(got, again)
    noisy = dynamics.sample_states(trace, 2000, noise=0.1, key=jax.random.key(2))
    nearest = np.min(np.abs(noisy[:, None, :] - allowed[None]).sum(-1), axis=1)
    assert 0.05 < np.std(noisy - allowed[np.argmin(np.abs(noisy[:, None, :] - allowed[None])
                                                   .sum(-1), axis=1)]) < 0.15
    assert nearest.max() > 0
    with pytest.raises(ValueError, match="key"):
        dynamics.sample_states(trace, 3)


def test_a_run_of_several_seeds_is_analysed_in_one_program():
    # find_fixed_points(FitResult) equals each member analysed on its own.
    def make(rngs):
        return R.Sequential([R.GRU(4, rngs=rngs), R.Dense(1, rngs=rngs)], input_shape=(5, 2))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 2)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None]
    result = R.fit(make, x, y, loss="mean_squared_error", batch_size=16, epochs=2, seed=3,
                   num_seeds=3, verbose=0)
    h0 = dynamics.sample_states(result, 24, x=x[:8], noise=0.05, key=jax.random.key(0))
    assert h0.shape == (3, 24, 4)
    pop = dynamics.find_fixed_points(result, np.zeros(2), h0, method="newton", max_iters=100,
                                     tol_q=1e-12)
    assert len(pop) == 3 and pop.members == result.members
    for i in range(3):
        alone = dynamics.find_fixed_points(result.model(i), np.zeros(2), h0[i],
                                           method="newton", max_iters=100, tol_q=1e-12)
        assert len(alone) == len(pop[i])
        np.testing.assert_allclose(pop[i].states, alone.states, atol=1e-5)
        assert pop[i].stability == alone.stability
    summary = pop.summary()
    assert summary["stable"] == [fp.count("stable") for fp in pop.per_member]
    assert sum(summary["stable_histogram"].values()) == 3
    jh, _ = dynamics.linearize(result, pop[0].states[:1], np.zeros(2))
    assert jh.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(jh[0, 0], pop[0].jac_state[0], atol=1e-6)


def test_plots(tmp_path):
    cell = R.SimpleRNNCell(1, rngs=nnx.Rngs(0), input_shape=(1,))
    cell.set_weights([np.ones((1, 1), np.float32), np.array([[2.0]], np.float32),
                      np.zeros(1, np.float32)])
    fp = dynamics.find_fixed_points(cell, np.zeros(1), np.linspace(-1, 1, 9)[:, None],
                                    method="newton", max_iters=50, tol_q=1e-12)
    traj = np.tanh(np.linspace(-2, 2, 30)).reshape(3, 10, 1)
    for path in (plots.plot_fixed_points(traj, fp, tmp_path / "fp.png"),
                 plots.plot_eigenvalues(fp, tmp_path / "eig.png")):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_named():
    cell = R.GRUCell(3, rngs=nnx.Rngs(0), input_shape=(2,))
    with pytest.raises(ValueError, match=r"initial_states must be \(N, 3\)"):
        dynamics.find_fixed_points(cell, np.zeros(2), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="inputs must be"):
        dynamics.find_fixed_points(cell, np.zeros(3), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="method"):
        dynamics.find_fixed_points(cell, np.zeros(2), np.zeros((4, 3)), method="lbfgs")
    with pytest.raises(ValueError, match="Bidirectional"):
        dynamics.recurrent_cell(R.Bidirectional(R.GRU(2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)))
    two = R.Sequential([R.GRU(2, return_sequences=True, rngs=nnx.Rngs(0)),
                        R.GRU(2, rngs=nnx.Rngs(1))], input_shape=(3, 1))
    with pytest.raises(ValueError, match="2 recurrent layers"):
        dynamics.recurrent_cell(two)
    assert dynamics.recurrent_cell(two, layer=1) is two.layers[1].cell
