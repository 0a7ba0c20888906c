"""What the experiments share: their common flags, the config built from the
parsed flags, and one training run with its outputs in a workdir
(`rnn_jax.workdir` lays the workdir out, writes and reads it).

Every experiment module `experiments.NAME` has the same shape (Flax's
examples'): `define_flags(flag_values)` defines its flags, the one home of
its defaults (with its `NOTEBOOK` dict, the notebook's hyperparameters of
each variant); `train_and_evaluate(config, workdir)` runs it and returns the
metrics (metrics.json's dict); `main` builds the config from the parsed
command line, sets the process up (`setup`) and calls it. In a script or a
test, the same run in-process:

    from experiments import common, sum3
    config = common.parse_config(sum3.define_flags, ["--flagfile=experiments/flags/sum3.flags",
                                                     "--epochs=1"])
    metrics = sum3.train_and_evaluate(config, "runs/sum3_short")

Common flags: `--workdir`, `--overwrite`, `--checkpoint_every`, `--seed`,
`--num_seeds`, `--epochs`, `--batch_size`, `--learning_rate`,
`--validation_split`, `--optimizer`, `--compilation_cache`; for generated
data `--num_samples`, `--data_seed`. Hyperparameters left unset take the
notebook's values for the chosen variant of the experiment. Bad values stop
the command with a one-line flag error (exit status 1).

`--learning_rate` takes one value or a comma list (`--learning_rate=0.001,0.003,0.01`):
several values are a sweep, trained in one program with `--num_seeds` seeds
per value (`rnn_jax.sweeps`); metrics.json then also holds `members` (the
seed and learning rate of each list entry) and the experiment's per-value
results. One value runs, records and resumes exactly as before.

A run in `--workdir` saves its training state every `--checkpoint_every` epochs
and at the end (`<workdir>/checkpoints/<epoch>/`). The same command again
resumes an unfinished run from the newest checkpoint and ends with the same
`metrics.json` as an unbroken run; a damaged newest checkpoint is named in a
warning and moved aside, and the run resumes from the newest intact one. A
finished run (its `metrics.json` written) is not redone: the same command says
so in one line and leaves its outputs as they are. `--overwrite` starts over:
it removes the run in the workdir (whatever its flags) and trains from the
first epoch. A workdir holding a run with other flags is refused unless
`--overwrite` is given; so are (a `RunError`: one line and exit status 1
from the command) a workdir that cannot be created or written in,
checkpoints that are all damaged, and a checkpoint of another model or number
of seeds. A run whose every seed meets a non-finite loss stops the same way,
in one line naming the epoch and step; with several seeds, the diverged ones
are named and the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from absl import app, flags, logging

import rnn_jax
from rnn_jax import workdir as workdir_lib

FLAGS = flags.FLAGS


def define_run_flags(flag_values: flags.FlagValues = FLAGS):
    """The flags of every experiment (where outputs go, checkpoints, the seed,
    the compilation cache, devices and processes) in `flag_values`; idempotent."""
    if "workdir" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "directory for the run's outputs: run.json, flags.txt, "
                        "metrics.json, timing.json, history.jsonl, checkpoints/, report.txt, "
                        "plots; a rerun with the same flags resumes an unfinished run from the "
                        "newest checkpoint", **fv)
    flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "rnn_jax", "xla"),
                        "directory of JAX's persistent compilation cache (a rerun with the same "
                        "shapes skips XLA compilation); empty to turn it off", **fv)
    flags.DEFINE_bool("overwrite", False, "replace the run already in --workdir and train from "
                      "the start (without it, a run with other flags is refused, a finished one "
                      "left as it is, and an unfinished one resumed)", **fv)
    flags.DEFINE_integer("checkpoint_every", 10, "save the training state every this many "
                         "epochs (and after the last) under <workdir>/checkpoints",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("seed", 0, "seed of the (first) model's weights and shuffling; seed i "
                         "of --num_seeds uses seed + i", **fv)
    flags.DEFINE_integer("cpu_devices", None, "host CPU devices for JAX; the seeds are spread "
                         "over them (default: one per core this process may run on, or the "
                         "count in XLA_FLAGS' --xla_force_host_platform_device_count); 1 for one "
                         "device", lower_bound=1, **fv)
    flags.DEFINE_string("coordinator_address", None, "runs over several processes (hosts): "
                        "host:port of process 0, for jax.distributed (one command per process)",
                        **fv)
    flags.DEFINE_integer("num_processes", None, "runs over several processes: how many",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("process_id", None, "runs over several processes: this process's "
                         "index", lower_bound=0, **fv)
    flags.DEFINE_bool("distributed", False, "runs over several processes: read the coordinator "
                      "address, process count and index from the cluster's environment "
                      "(SLURM's srun, Open MPI's mpirun), instead of the three flags above", **fv)
    flags.DEFINE_integer("heartbeat_timeout", 100, "runs over several processes: seconds after "
                         "which the others give up on a process that stopped (and exit with an "
                         "error)", lower_bound=1, **fv)


def define_training_flags(flag_values: flags.FlagValues = FLAGS):
    """The training flags in `flag_values` (idempotent)."""
    if "num_seeds" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("num_seeds", 1, "number of models trained at once (one compiled "
                         "program, vmap over seeds)", lower_bound=1, **fv)
    flags.DEFINE_integer("epochs", None, "epochs (default: the notebook's)", lower_bound=1, **fv)
    flags.DEFINE_integer("batch_size", None, "batch size (default: the notebook's)",
                         lower_bound=1, **fv)
    flags.DEFINE(LearningRatesParser(), "learning_rate", None, "learning rate (default: the "
                 "notebook's); a comma list (0.001,0.003,0.01) trains --num_seeds seeds per "
                 "value in one program", serializer=LearningRatesParser(), **fv)
    flags.DEFINE_float("validation_split", None, "fraction of the samples, taken from the end "
                       "before shuffling, used for validation (default: the notebook's)", **fv)
    flags.DEFINE_enum("optimizer", "adam", list(rnn_jax.optimizers.NAMES),
                      "optimizer, with Keras' defaults", **fv)
    flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "progress: 1 a bar over the epochs "
                      "with ETA, 2 one line per epoch, 0 none", **fv)
    flags.register_validator("validation_split", lambda v: v is None or 0.0 <= v < 1.0,
                             message="--validation_split must be in [0, 1)", **fv)


def define_generated_data_flags(flag_values: flags.FlagValues = FLAGS):
    """Flags of the generated toy data in `flag_values` (idempotent)."""
    if "num_samples" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("num_samples", 10000, "number of generated sequences", lower_bound=2,
                         **fv)
    flags.DEFINE_integer("data_seed", 0, "seed of the generated data (the same for every "
                         "model seed)", **fv)


define_run_flags(FLAGS)


def main_of(train_and_evaluate: Callable[[Config, str | None], Any],
            flag_values: flags.FlagValues = FLAGS):
    """An experiment's `main(argv)` for `absl.app.run`: the config of the parsed
    flags, `setup`, then `train_and_evaluate(config, --workdir)`, a `RunError`
    printed in one line (exit status 1)."""
    def main(argv):
        config = config_from_flags(flag_values, argv)
        setup(config)
        with errors_in_one_line():
            train_and_evaluate(config, flag_values.workdir)
    return main


# The recurrent layers a sequence task's experiment may train (--cell).
SEQUENCE_LAYERS = {"gru": rnn_jax.GRU, "lstm": rnn_jax.LSTM, "simple_rnn": rnn_jax.SimpleRNN}


def define_sequence_model_flags(flag_values: flags.FlagValues = FLAGS, steps: int = 64):
    """--cell, --units and --steps of a sequence task's model (defined by
    several experiments: allow_override lets one process import them all; in
    absl's global FLAGS the later import wins, `parse_config` gives each
    experiment its own flags)."""
    fv = dict(flag_values=flag_values, allow_override=True)
    flags.DEFINE_enum("cell", "gru", list(SEQUENCE_LAYERS), "the recurrent layer", **fv)
    flags.DEFINE_integer("units", 16, "units of the recurrent layer", lower_bound=1, **fv)
    flags.DEFINE_integer("steps", steps, "time steps per sequence", lower_bound=2, **fv)


def define_sequence_task_flags(flag_values: flags.FlagValues = FLAGS, steps: int = 64):
    """Every flag of an experiment that trains a sequence task's model and reads
    its fixed points (flipflop, integrator): the run, training, data, model
    and fixed-point flags."""
    define_run_flags(flag_values)
    define_training_flags(flag_values)
    define_generated_data_flags(flag_values)
    define_fixed_point_flags(flag_values)
    define_sequence_model_flags(flag_values, steps=steps)


def sequence_model_fn(cell: str, units: int, steps: int, features: int, outputs: int):
    """`rngs -> Sequential`: a recurrent layer returning sequences, then a
    `Dense(outputs)` read-out at every step, for `(steps, features)` inputs."""
    def make(rngs):
        return rnn_jax.Sequential([SEQUENCE_LAYERS[cell](units, return_sequences=True, rngs=rngs),
                                   rnn_jax.Dense(outputs, rngs=rngs)],
                                  input_shape=(steps, features))
    return make


def fixed_point_plots(run, result, fps, x, name: str) -> list:
    """The first member's trajectories on `x` with its fixed points
    (`fixed_points.png`), and their eigenvalues (`eigenvalues.png`)."""
    from rnn_jax import dynamics, plots

    seed = result.members[0]["seed"]
    traj = np.concatenate([np.concatenate(list(t.states.values()), -1)
                           for t in dynamics.trajectories(result.model(0), x)], -1)
    return [plots.plot_fixed_points(traj, fps[0], run.path("fixed_points.png"),
                                    title=f"{name}, seed {seed}: {fps[0].summary()}"),
            plots.plot_eigenvalues(fps[0], run.path("eigenvalues.png"),
                                   title=f"{name}, seed {seed}: eigenvalues of dF/dh")]


def define_fixed_point_flags(flag_values: flags.FlagValues = FLAGS):
    """Flags of the fixed-point analysis (`rnn_jax.dynamics`; idempotent)."""
    if "candidates" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("candidates", 256, "candidate states per seed, drawn from its "
                         "trajectories on held-out inputs", lower_bound=1, **fv)
    flags.DEFINE_float("candidate_noise", 0.02, "standard deviation of the noise added to the "
                       "candidates", lower_bound=0.0, **fv)
    flags.DEFINE_enum("fp_method", "newton", ["newton", "adam"], "how q(h) = |F(h) - h|^2 / 2 "
                      "is minimised: damped Gauss-Newton, or Adam (FixedPointFinder's)", **fv)
    flags.DEFINE_integer("fp_max_iters", 200, "steps of the fixed-point search", lower_bound=1,
                         **fv)
    flags.DEFINE_float("fp_tol_q", 1e-12, "a state is a fixed point when q is below this",
                       lower_bound=0.0, **fv)
    flags.DEFINE_float("fp_tol_unique", 1e-3, "fixed points closer than this are one",
                       lower_bound=0.0, **fv)


def find_fixed_points(result, x, inputs, config: Config):
    """Every member's fixed points under the constant `inputs` (`rnn_jax.dynamics`,
    one program), from candidates drawn from its own trajectories on `x`."""
    import jax

    from rnn_jax import dynamics

    h0 = dynamics.sample_states(result, config.candidates, x=x, noise=config.candidate_noise,
                                key=jax.random.key(config.seed))
    return dynamics.find_fixed_points(
        result, inputs, h0, method=config.fp_method, max_iters=config.fp_max_iters,
        tol_q=config.fp_tol_q, tol_unique=config.fp_tol_unique)


class LearningRatesParser(flags.ArgumentParser, flags.ArgumentSerializer):
    """`--learning_rate`: a float > 0 (the flag's value, as a float flag's) or a
    comma list of distinct ones (the value: a list of floats); serialised back
    the same way, so flags.txt is a valid --flagfile."""

    syntactic_help = "a float > 0, or a comma list of distinct ones"

    def parse(self, argument):
        parts = (list(argument) if isinstance(argument, (list, tuple))
                 else str(argument).split(","))
        values = []
        for part in parts:
            try:
                v = float(part)
            except ValueError:
                raise ValueError(f"{str(part).strip()!r} is not a number") from None
            if not (v > 0 and np.isfinite(v)):
                raise ValueError("--learning_rate must be > 0" if len(parts) == 1 else
                                 f"every --learning_rate must be > 0, got {v}")
            if v in values:
                raise ValueError(f"--learning_rate {v} is given twice")
            values.append(v)
        return values[0] if len(values) == 1 else values

    def flag_type(self):
        return "float list"

    def serialize(self, value):
        return ",".join(repr(v) for v in value) if isinstance(value, list) else repr(value)


@dataclasses.dataclass(frozen=True)
class Config:
    """An experiment's settings: the value of each of its flags, read as
    attributes (`config.epochs`, `config.input`; None where a hyperparameter
    flag is unset and the notebook's value applies, see `hyperparameters`).
    Built from parsed flags by `config_from_flags` (or `parse_config`), never
    changed. The workdir is not in it: it is `train_and_evaluate`'s second
    argument.

    Attributes:
      flags: flag name -> value (read-only).
      flags_text: the flags as a `--flagfile` (one `--name=value` a line,
        without `--workdir`); flags.txt is this plus the workdir's line.
    """

    flags: Mapping[str, Any]
    flags_text: str = ""

    def __getattr__(self, name: str):
        values = self.__dict__.get("flags")
        if values is None or name not in values:
            raise AttributeError(f"the config has no flag {name!r}")
        return values[name]


def config_from_flags(flag_values: flags.FlagValues = FLAGS,
                      argv: Sequence[str] = ("",)) -> Config:
    """The `Config` of parsed `flag_values` (absl's own flags left out). `argv`,
    what absl left of the command line, must hold the program name only."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
    values = {f.name: f.value for module, flag_list in flag_values.flags_by_module_dict().items()
              if not module.startswith("absl") for f in flag_list if f.name != "workdir"}
    text = "".join(line for line in flag_values.flags_into_string().splitlines(keepends=True)
                   if not line.startswith("--workdir="))
    return Config(types.MappingProxyType(dict(sorted(values.items()))), text)


def parse_config(define_flags: Callable[[flags.FlagValues], None],
                 args: Sequence[str]) -> Config:
    """The `Config` of the command-line flags `args` (e.g.
    `["--flagfile=experiments/flags/sum3.flags", "--epochs=1"]`) of the
    experiment whose flags `define_flags` defines: what its `main` gets from
    the same command. The flags are parsed into a `FlagValues` of their own,
    so absl's global `FLAGS` is left alone and experiments defining the same
    flag name with other defaults do not meet. Bad values raise absl's
    `flags.Error` naming the flag."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["experiment", *args])
    return config_from_flags(flag_values)


def hyperparameters(config: Config, defaults: dict) -> dict:
    """The run's epochs, batch_size, learning_rate, validation_split: the
    config's flags over `defaults` (the notebook's), and its optimizer."""
    hp = dict(defaults)
    for name in ("epochs", "batch_size", "learning_rate", "validation_split"):
        if getattr(config, name) is not None:
            hp[name] = getattr(config, name)
    hp["optimizer"] = config.optimizer
    return hp


def learning_rates(hp: dict) -> list | None:
    """The swept learning rates of a run (`hp['learning_rate']` a list), else None."""
    lr = hp["learning_rate"]
    return list(lr) if isinstance(lr, (list, tuple)) else None


def setup(config: Config):
    """What every experiment's `main` does first, before JAX runs anything:
    logging, the compilation cache, the host CPU devices (`--cpu_devices`),
    and `rnn_jax.use_processes` (JAX's distributed runtime) when the run
    spans several processes (`--distributed`, or `--coordinator_address`,
    `--num_processes` and `--process_id`). These are the process's: an
    in-process call of `train_and_evaluate` runs on the JAX it finds."""
    if not FLAGS["verbosity"].present:  # keep Orbax's INFO lines out of the progress
        logging.set_verbosity(logging.WARNING)
    use_compilation_cache(config.compilation_cache)
    if (config.cpu_devices is not None
            or "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")):
        rnn_jax.training.use_cpu_cores(config.cpu_devices)
    given = [config.coordinator_address, config.num_processes, config.process_id]
    if config.distributed:
        if any(v is not None for v in given):
            raise app.UsageError("--distributed reads the process flags from the cluster's "
                                 "environment: give it without --coordinator_address, "
                                 "--num_processes and --process_id")
        rnn_jax.use_processes(heartbeat_timeout_seconds=config.heartbeat_timeout)
    elif any(v is not None for v in given):
        if any(v is None for v in given):
            raise app.UsageError("runs over several processes need --coordinator_address, "
                                 "--num_processes and --process_id together")
        if config.process_id >= config.num_processes:
            raise app.UsageError(f"--process_id={config.process_id} must be < "
                                 f"--num_processes={config.num_processes}")
        rnn_jax.use_processes(*given, heartbeat_timeout_seconds=config.heartbeat_timeout)
    if jax.process_index() > 0:  # process 0 prints the run; the others' errors go to stderr
        sys.stdout = open(os.devnull, "w")


class RunError(Exception):
    """A run that cannot go on, for a reason said in one line (its message
    starts with the experiment's name): a refused workdir, damaged or foreign
    checkpoints, unreadable data, every seed diverged. `main` prints it
    without a traceback and exits with status 1 (`errors_in_one_line`)."""


@contextlib.contextmanager
def errors_in_one_line():
    """`main`'s guard: a `RunError` becomes its one line on stderr and exit status 1."""
    try:
        yield
    except RunError as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(1)


def _preload_output_modules():
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import orbax.checkpoint  # noqa: F401


def use_compilation_cache(path: str | None):
    """Turn on JAX's persistent compilation cache at `path` (every program cached)."""
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def fast_compile_options(num_seeds: int):
    """XLA's cheaper optimisation for a toy model's one-seed run on CPU; None
    (XLA's defaults) for several seeds, where it would slow training down.

    Measured 2026-12-02 on a 2-core VM (sum3, whole commands, no compilation
    cache, 3 runs each, alternating): one seed compiles and trains as fast
    either way (the option is kept there so that the notebooks' one-seed
    runs repeat earlier versions' results bitwise: the two option sets
    differ by float rounding); 64 seeds compile in 1.6-1.8 instead of 2.1-2.6
    s but train 5x slower (0.3 instead of 0.06 s); 512 seeds train 6x slower
    (1.7-2.2 instead of 0.3 s), and with 50 epochs the whole command took
    27.8 instead of 11.3 s.
    """
    if num_seeds > 1 or jax.default_backend() != "cpu":
        return None
    return {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# Flags that change how a run is carried out, not what it computes: a rerun may
# change them and still resume.
OPERATIONAL_FLAGS = frozenset({
    "workdir", "overwrite", "checkpoint_every", "compilation_cache", "cpu_devices",
    "coordinator_address", "num_processes", "process_id", "distributed",
    "heartbeat_timeout", "verbose"})


def run_flags(config: Config) -> dict:
    """The flags that define a run's results, as `run.json` holds them: name ->
    value as JSON reads it back (`OPERATIONAL_FLAGS` left out)."""
    out = {k: v for k, v in config.flags.items() if k not in OPERATIONAL_FLAGS}
    return json.loads(json.dumps(dict(sorted(out.items())), default=str))


GO, REFUSED, COMPLETE = 0, 1, 2  # what Run does with a workdir (process 0 tells the others)


class Run:
    """One training run of an experiment, configured by `config`, writing into
    `workdir` (if given).

    Creating it claims the workdir (`rnn_jax.workdir.claim`; a refusal raises
    `RunError`). When the workdir holds this run finished, it says so in one
    line and `complete` is True: the experiment returns `saved_metrics()`
    instead of training.
    """

    def __init__(self, name: str, config: Config, workdir: str | None):
        self.name = name
        self.config = config
        # With several processes, process 0 writes the outputs; every process
        # writes its shards of the checkpoints.
        self.workdir = workdir if jax.process_index() == 0 else None
        self.checkpoint_dir = workdir_lib.checkpoint_dir(workdir) if workdir else None
        self.t_start = time.perf_counter()
        status, refusal = GO, None
        if self.workdir:
            try:
                if (workdir_lib.claim(self.workdir, run_flags(config), config.overwrite)
                        and workdir_lib.is_finished(self.workdir)):
                    status = COMPLETE
            except ValueError as e:  # an expected refusal: one line, no traceback
                status, refusal = REFUSED, f"{name}: {e}"
        if workdir and jax.process_count() > 1:  # the others wait for process 0's claim
            from jax.experimental import multihost_utils
            status = int(multihost_utils.broadcast_one_to_all(np.int32(status)))
            if status == REFUSED and refusal is None:
                refusal = f"{name}: process 0 refused --workdir={workdir}"
        if status == REFUSED:
            raise RunError(refusal)
        self.complete = status == COMPLETE
        self.given_workdir = workdir  # every process's (self.workdir: process 0's only)
        if self.complete:
            print(f"{name}: --workdir={workdir} holds this run, already complete; its "
                  "outputs are left as they are (--overwrite trains it again)", flush=True)
        elif self.workdir:
            workdir_lib.write_flags(self.workdir, config.flags_text + f"--workdir={workdir}\n")
            # Import what the outputs need while XLA compiles (which releases the GIL).
            self._preload = threading.Thread(target=_preload_output_modules, daemon=True)
            self._preload.start()

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def saved_metrics(self) -> dict:
        """The finished run's metrics.json."""
        return workdir_lib.read_metrics(self.given_workdir)

    def fit(self, make_model: Callable, x, y, *, loss: str, metrics=(), hp: dict,
            fast_compile: bool = True, validation_data=None) -> rnn_jax.FitResult:
        """`rnn_jax.fit` with the run's config; history.jsonl is rewritten every
        epoch (`rnn_jax.workdir.History`)."""
        num_seeds, seed = self.config.num_seeds, self.config.seed
        swept = learning_rates(hp)
        num_members = num_seeds * (len(swept) if swept else 1)
        print(f"{self.name}: {x.shape[0]} samples, x {x.shape[1:]}, y {y.shape[1:]}; "
              f"{hp['optimizer']}(learning_rate={hp['learning_rate']}), batch {hp['batch_size']}, "
              f"{hp['epochs']} epochs, validation_split {hp['validation_split']}; "
              f"{num_seeds} seed{'s' if num_seeds > 1 else ''} from {seed}"
              + (f" per learning rate ({num_members} members)" if swept else ""))
        history = workdir_lib.History(self.workdir, num_members) if self.workdir else None

        def write_history(epoch, logs, state):
            history.append(epoch, logs)

        callbacks = []
        if self.workdir:
            hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                       for k, v in run_flags(self.config).items() if v is not None}
            callbacks = [write_history, rnn_jax.callbacks.TensorBoard(
                self.path(workdir_lib.TENSORBOARD), hparams=hparams)]

        try:
            result = rnn_jax.fit(
                make_model, x, y, loss=loss, optimizer=hp["optimizer"],
                learning_rate=hp["learning_rate"], metrics=metrics,
                batch_size=hp["batch_size"], epochs=hp["epochs"],
                validation_split=hp["validation_split"], validation_data=validation_data,
                seed=seed, num_seeds=num_seeds,
                callbacks=callbacks,
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=self.config.checkpoint_every,
                compiler_options=fast_compile_options(num_members) if fast_compile else None,
                verbose=int(self.config.verbose))
        except rnn_jax.NonFiniteLossError as e:
            kept = ("" if not self.workdir else
                    "; no checkpoint was saved before" if e.last_checkpoint is None else
                    f"; the last good checkpoint is {e.last_checkpoint}")
            raise RunError(f"{self.name}: {e}{kept}") from None
        except ValueError as e:
            from rnn_jax import checkpoints  # loaded already when fit had a checkpoint_dir
            if not isinstance(e, checkpoints.CheckpointError):
                raise
            raise RunError(f"{self.name}: {e}") from None  # damaged or another run's
        self.result = result
        return result

    def finish(self, extra_metrics: dict, report: str, plots: Callable[[], list] | None = None):
        """Print the report; write metrics.json, timing.json, report.txt and plots
        (the final checkpoint is already in checkpoints/). Returns the metrics.

        metrics.json holds only what the run computed (bitwise the same for a
        resumed run); the times are in timing.json.
        """
        print(report)
        r = self.result
        seed = self.config.seed
        metrics = workdir_lib.final_metrics(r.history, r.num_members)
        metrics.update(num_seeds=r.num_seeds, seed=seed)
        swept = len(r.members[0]) > 1
        if swept:  # lists above are per member: say which is which
            metrics.update(num_members=r.num_members, members=r.members)
        if r.diverged and not swept:
            metrics["diverged_seeds"] = {str(seed + i): {"epoch": e, "step": s}
                                         for i, (e, s) in sorted(r.diverged.items())}
        elif r.diverged:
            metrics["diverged_members"] = {str(i): {**r.members[i], "epoch": e, "step": s}
                                           for i, (e, s) in sorted(r.diverged.items())}
        metrics.update(extra_metrics)
        if not self.workdir:
            return metrics
        self._preload.join()
        from rnn_jax import plots as plots_lib

        workdir_lib.write_report(self.workdir, report)
        written = [plots_lib.plot_history(
            r.history, self.path("loss.png"), title=f"{self.name}: loss per epoch")]
        if plots is not None:
            written += plots()
        workdir_lib.write_results(self.workdir, metrics, timing={
            "compile_seconds": r.compile_seconds, "train_seconds": r.train_seconds,
            "epochs_run": len(r.epoch_seconds), "resumed_from_epoch": r.initial_epoch,
            "wall_seconds": time.perf_counter() - self.t_start})
        print(f"wrote {self.workdir}: metrics.json, timing.json, history.jsonl, checkpoints/, "
              "report.txt, " + ", ".join(os.path.basename(p) for p in written))
        return metrics


def fmt(a, decimals: int = 3) -> str:
    """A small array rounded for a report line."""
    return np.array2string(np.round(np.asarray(a, dtype=float), decimals), separator=", ",
                           suppress_small=True)
