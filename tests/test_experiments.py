"""End-to-end runs of the shapes experiment (notebooks 001, 003, 004):
in-process (`evaluate(config, workdir)`, the config parsed from the command's
flags), and its command line's bad flags as a subprocess."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_flag_error
from experiments import common, shapes


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def evaluate_in_process(*args, workdir):
    """`python -m experiments.shapes ARGS --workdir=WORKDIR`, in this process."""
    args = [a.replace("--flagfile=", f"--flagfile={ROOT}/", 1) for a in args]
    return shapes.evaluate(common.parse_config(shapes.define_flags, args), str(workdir))


def test_shapes_from_flagfile(tmp_path, capsys):
    returned = evaluate_in_process("--flagfile=experiments/flags/shapes.flags", "--N=3",
                                   workdir=tmp_path)
    out = capsys.readouterr().out
    assert "W (kernel)             shape (3, 5)" in out
    assert "counted 57" in out  # 5*(5+3)+5 + 5*2+2
    # Keras-style summaries, counts by hand for M=5, D=3, K=2 (T=10 does not count);
    # layer names as Keras makes them unique in a process (gru, gru_1, ...)
    for row in [r"simple_rnn(_\d+)? \(SimpleRNN\)\s+\(None, 5\)\s+45",
                r"dense(_\d+)? \(Dense\)\s+\(None, 2\)\s+12",
                r"gru(_\d+)? \(GRU\)\s+\(None, 5\)\s+150",   # 3*(5*8 + 2*5)
                r"gru(_\d+)? \(GRU\)\s+\(None, 5\)\s+135",   # 3*(5*8 + 5)
                r"lstm(_\d+)? \(LSTM\)\s+\(None, 5\)\s+180",  # 4*(5*8 + 5)
                r"Total params: 57\n"]:
        assert re.search(row, out), row
    for what in ["SimpleRNNCell step", "StackedRNNCells",
                 "return_sequences=True) output (3, 10, 5)", "last step vs return_sequences=False"]:
        assert re.search(re.escape(what) + r".*max \|difference\| = \d\.\d\de[-+]\d\d", out), what
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == returned
    assert results["N"] == 3
    assert results["max_abs_diff_N1"] < 1e-5 and results["max_abs_diff_N3"] < 1e-5
    assert results["params"] == {"SimpleRNN": 45, "GRU_reset_after_True": 150,
                                 "GRU_reset_after_False": 135, "LSTM": 180, "Dense": 12}
    assert set(results["checks"]) == {"max_abs_diff_N1", "max_abs_diff_N3", "cell_step",
                                      "stacked_cells", "return_sequences", "last_step"}
    assert all(0 <= v < 1e-5 for v in results["checks"].values()), results["checks"]


def test_shapes_other_sizes_counted_by_formula(tmp_path, capsys):
    # D=1, M=2, K=3: SimpleRNN 2*3+2 = 8, GRU 3*(6+4) = 30 / 3*(6+2) = 24, LSTM 4*(6+2) = 32
    evaluate_in_process("--N=2", "--T=3", "--D=1", "--M=2", "--K=3", workdir=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["params"] == {"SimpleRNN": 8, "GRU_reset_after_True": 30,
                                 "GRU_reset_after_False": 24, "LSTM": 32, "Dense": 9}
    assert ("StackedRNNCells([SimpleRNNCell(2), SimpleRNNCell(3)])) output (2, 3)"
            in capsys.readouterr().out)


def test_shapes_parameter_mismatch_fails(monkeypatch):
    # A wrong formula (or a wrong count) must stop the run with a message.
    from flax import nnx

    import rnn_jax
    from experiments import shapes

    model = rnn_jax.Sequential([rnn_jax.SimpleRNN(2, rngs=nnx.Rngs(0)),
                                rnn_jax.Dense(1, rngs=nnx.Rngs(1))], input_shape=(3, 1))
    assert shapes.check_summaries(2, 1, 3, 1, model)["LSTM"] == 32
    monkeypatch.setattr(shapes, "expected_params",
                        lambda kind, m, d, reset_after=True: 33 if kind == "LSTM" else
                        {"SimpleRNN": 8, "GRU": 30 if reset_after else 24}[kind])
    with pytest.raises(SystemExit, match="LSTM: counted 32 parameters, the formula 4"):
        shapes.check_summaries(2, 1, 3, 1, model)


def test_shapes_states_by_hand_is_independent():
    # h_t = tanh(x_t W + h_{t-1} U + b) with W = 1, U = 0, b = 0: h_t = tanh(x_t);
    # with U = 1 and b = 0 on x = (a, 0): h_1 = tanh(a), h_2 = tanh(tanh(a)).
    from experiments.shapes import states_by_hand

    x = np.array([[[0.3], [0.0]]])
    np.testing.assert_allclose(states_by_hand(x, np.ones((1, 1)), np.zeros((1, 1)), np.zeros(1)),
                               np.tanh(x))
    h = states_by_hand(x, np.ones((1, 1)), np.ones((1, 1)), np.zeros(1))
    np.testing.assert_allclose(h[0, :, 0], [np.tanh(0.3), np.tanh(np.tanh(0.3))])


def test_shapes_forward_by_hand_is_independent():
    # The by-hand pass is numpy only: check it on weights whose output is known
    # in closed form (linear recurrence with W = U = 1, b = 0: the running sum).
    from experiments.shapes import forward_by_hand

    x = np.full((2, 3, 1), 0.1)
    W, U, b = np.ones((1, 1)), np.zeros((1, 1)), np.zeros(1)
    y = forward_by_hand(x, W, U, b, np.ones((1, 1)), np.zeros(1))
    np.testing.assert_allclose(y, np.tanh(0.1) * np.ones((2, 1)))


def test_parse_config_gives_each_experiment_its_own_flags_and_leaves_absl_flags_alone():
    """A config is what the command parses: the flagfile, then the flags after it
    (the later wins), each experiment with its own defaults (contains4's and
    Reuters' --embedding_dim differ), absl's global FLAGS untouched; read-only;
    its flags_text a flagfile that parses back to the same config."""
    import dataclasses

    from absl import flags

    from experiments import contains4, reuters, sum3

    c = common.parse_config(sum3.define_flags, [f"--flagfile={ROOT}/experiments/flags/sum3.flags",
                                                "--epochs=3", "--input=onehot", "--seed=7"])
    assert (c.input, c.epochs, c.seed, c.num_seeds, c.batch_size) == ("onehot", 3, 7, 64, None)
    assert "workdir" not in c.flags and "--workdir" not in c.flags_text
    # hyperparameters: the flags over the notebook's values of the chosen part
    assert common.hyperparameters(c, sum3.NOTEBOOK[c.input]) == {
        "learning_rate": 0.005, "batch_size": 8, "epochs": 3, "validation_split": 0.2,
        "optimizer": "adam"}
    assert common.run_flags(c)["epochs"] == 3 and "overwrite" not in common.run_flags(c)
    assert common.parse_config(contains4.define_flags, []).embedding_dim == 10
    assert common.parse_config(reuters.define_flags, []).embedding_dim == 32
    assert common.FLAGS["seed"].value == 0 and not common.FLAGS["seed"].present
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 4
    with pytest.raises(AttributeError, match="the config has no flag 'epoch'"):
        c.epoch
    with pytest.raises(flags.IllegalFlagValueError, match="flag --epochs=0"):
        common.parse_config(sum3.define_flags, ["--epochs=0"])
    with pytest.raises(flags.UnrecognizedFlagError):
        common.parse_config(sum3.define_flags, ["--N=3"])  # shapes', not sum3's
    again = common.parse_config(sum3.define_flags,
                                [a for a in c.flags_text.splitlines() if a.startswith("--")])
    assert again.flags == c.flags


# shapes trains nothing: it has no --epochs, --batch_size or --validation_split (unknown there).
@pytest.mark.parametrize("bad", ["--N=0", "--T=-1", "--M=0", "--no_such_flag=1", "--epochs=2"])
def test_shapes_bad_flags_fail_cleanly(bad):
    proc = run_module("experiments.shapes", "--flagfile=experiments/flags/shapes.flags", bad)
    flag, value = bad.lstrip("-").split("=")
    assert_flag_error(proc, flag, value if flag in ("N", "T", "M") else None)
