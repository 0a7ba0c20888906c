"""rnn_jax: Keras-exact recurrent layers in Flax NNX, run with `jax.lax.scan`.

    import rnn_jax
    from flax import nnx

    model = rnn_jax.Sequential([
        rnn_jax.Embedding(10, 4, rngs=nnx.Rngs(0)),
        rnn_jax.SimpleRNN(1, activation="linear", rngs=nnx.Rngs(1)),
        rnn_jax.Activation("sigmoid"),
    ])
    probs = model(ids_BxT)

`from_keras(keras_object)` and `to_keras(module)` move trained weights
between Keras 3 and these modules with identical predictions.
`rnn_jax.use_cpu_cores()`, called before JAX runs anything, makes one JAX
device per CPU core, so that `fit(..., num_seeds=N)` trains on all of them;
`rnn_jax.use_processes(...)` joins several processes (hosts) into one run;
`with rnn_jax.check_inputs(): ...` makes every layer refuse NaN / inf inputs;
`with rnn_jax.jax_lstm_gradients(): ...` lets forward-mode autodiff
(`jax.jacfwd`, `jax.hessian`) through LSTM and SimpleRNN layers on CPU.
"""

from rnn_jax import (activations, callbacks, cudnn, datasets, dynamics, functional, initializers,
                     layers, losses, metrics, models, optimizers, plots, readout, scan, sweeps,
                     utils)
from rnn_jax.base import Layer, check_inputs
from rnn_jax.cells import (DropoutMasks, GatedCell, GRUCell, LSTMCell, LSTMState, RNNCellBase,
                           SimpleRNNCell, StackedRNNCells)
from rnn_jax.core import (Activation, Add, Concatenate, Dense, Dropout, Embedding, Flatten,
                          GlobalAveragePooling1D, GlobalMaxPooling1D, Masking, RepeatVector,
                          TimeDistributed)
from rnn_jax.keras_interop import from_keras, to_keras
from rnn_jax.functional import Input
from rnn_jax.models import Model, Sequential
from rnn_jax.recurrent import GRU, LSTM, RNN, Bidirectional, RNNState, SimpleRNN
from rnn_jax.scan import jax_lstm_gradients, scan_cell
from rnn_jax.training import (FitResult, NonFiniteLossError, TrainState, evaluate, fit,
                              use_cpu_cores, use_processes)

__all__ = [
    "Activation", "Add", "Bidirectional", "Concatenate", "Dense", "Dropout", "DropoutMasks",
    "Embedding", "FitResult", "Flatten", "GRU", "GRUCell", "GatedCell",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Input", "LSTM", "LSTMCell", "LSTMState",
    "Layer", "Masking", "Model", "NonFiniteLossError", "RNN", "RNNCellBase", "RNNState",
    "RepeatVector", "Sequential", "SimpleRNN", "SimpleRNNCell", "StackedRNNCells",
    "TimeDistributed", "TrainState", "activations", "callbacks", "check_inputs", "cudnn",
    "datasets", "dynamics", "evaluate", "fit", "from_keras", "functional", "initializers",
    "jax_lstm_gradients", "layers", "losses", "metrics", "models", "optimizers", "plots",
    "readout", "scan", "scan_cell", "sweeps", "to_keras", "use_cpu_cores", "use_processes",
    "utils",
]

__version__ = "0.1.0"
