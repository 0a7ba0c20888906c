"""What the training experiments share: the common flags, and one training run
with its outputs in `--workdir` (see `rnn_jax.workdir` for the layout).

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
`--overwrite` is given; so are, with one
line and exit status 1, a workdir that cannot be created or written in,
checkpoints that are all damaged, and a checkpoint of another model or number
of seeds. A run whose every seed meets a non-finite loss stops with exit status
1 and one line naming the epoch and step; with several seeds, the diverged ones
are named and the others go on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from typing import Callable

import jax
import numpy as np
from absl import app, flags, logging

import rnn_jax
from rnn_jax import workdir as workdir_lib

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "directory for the run's outputs: run.json, flags.txt, "
                    "metrics.json, timing.json, history.jsonl, checkpoints/, report.txt, plots; "
                    "a rerun with the same flags resumes from the newest checkpoint")
flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "rnn_jax", "xla"),
                    "directory of JAX's persistent compilation cache (a rerun with the same "
                    "shapes skips XLA compilation); empty to turn it off")
flags.DEFINE_bool("overwrite", False, "replace the run already in --workdir and train from "
                  "the start (without it, a run with other flags is refused, a finished one "
                  "left as it is, and an unfinished one resumed)")
flags.DEFINE_integer("checkpoint_every", 10, "save the training state every this many epochs "
                     "(and after the last) under <workdir>/checkpoints", lower_bound=1)
flags.DEFINE_integer("seed", 0, "seed of the (first) model's weights and shuffling; seed i of "
                     "--num_seeds uses seed + i")


flags.DEFINE_integer("cpu_devices", None, "host CPU devices for JAX; the seeds are spread "
                     "over them (default: one per core this process may run on, or the count "
                     "in XLA_FLAGS' --xla_force_host_platform_device_count); 1 for one device",
                     lower_bound=1)
flags.DEFINE_string("coordinator_address", None, "runs over several processes (hosts): "
                    "host:port of process 0, for jax.distributed (one command per process)")
flags.DEFINE_integer("num_processes", None, "runs over several processes: how many",
                     lower_bound=1)
flags.DEFINE_integer("process_id", None, "runs over several processes: this process's index",
                     lower_bound=0)
flags.DEFINE_bool("distributed", False, "runs over several processes: read the coordinator "
                  "address, process count and index from the cluster's environment (SLURM's "
                  "srun, Open MPI's mpirun), instead of the three flags above")
flags.DEFINE_integer("heartbeat_timeout", 100, "runs over several processes: seconds after "
                     "which the others give up on a process that stopped (and exit with an "
                     "error)", lower_bound=1)


def setup():
    """What every experiment does first, before JAX runs anything: logging,
    the compilation cache, the host CPU devices (`--cpu_devices`), and
    `rnn_jax.use_processes` (JAX's distributed runtime) when the run spans
    several processes (`--distributed`, or `--coordinator_address`,
    `--num_processes` and `--process_id`)."""
    if not FLAGS["verbosity"].present:  # keep Orbax's INFO lines out of the progress
        logging.set_verbosity(logging.WARNING)
    use_compilation_cache(FLAGS.compilation_cache)
    if (FLAGS.cpu_devices is not None
            or "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")):
        rnn_jax.training.use_cpu_cores(FLAGS.cpu_devices)
    given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if FLAGS.distributed:
        if any(v is not None for v in given):
            raise app.UsageError("--distributed reads the process flags from the cluster's "
                                 "environment: give it without --coordinator_address, "
                                 "--num_processes and --process_id")
        rnn_jax.use_processes(heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
    elif any(v is not None for v in given):
        if any(v is None for v in given):
            raise app.UsageError("runs over several processes need --coordinator_address, "
                                 "--num_processes and --process_id together")
        if FLAGS.process_id >= FLAGS.num_processes:
            raise app.UsageError(f"--process_id={FLAGS.process_id} must be < "
                                 f"--num_processes={FLAGS.num_processes}")
        rnn_jax.use_processes(*given, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
    if jax.process_index() > 0:  # process 0 prints the run; the others' errors go to stderr
        sys.stdout = open(os.devnull, "w")


def define_training_flags():
    """The training flags (idempotent: experiments call it at import)."""
    if "num_seeds" in FLAGS:
        return
    flags.DEFINE_integer("num_seeds", 1, "number of models trained at once (one compiled "
                         "program, vmap over seeds)", lower_bound=1)
    flags.DEFINE_integer("epochs", None, "epochs (default: the notebook's)", lower_bound=1)
    flags.DEFINE_integer("batch_size", None, "batch size (default: the notebook's)",
                         lower_bound=1)
    flags.DEFINE(LearningRatesParser(), "learning_rate", None, "learning rate (default: the "
                 "notebook's); a comma list (0.001,0.003,0.01) trains --num_seeds seeds per "
                 "value in one program", serializer=LearningRatesParser())
    flags.DEFINE_float("validation_split", None, "fraction of the samples, taken from the end "
                       "before shuffling, used for validation (default: the notebook's)")
    flags.DEFINE_enum("optimizer", "adam", list(rnn_jax.optimizers.NAMES),
                      "optimizer, with Keras' defaults")
    flags.register_validator("validation_split", lambda v: v is None or 0.0 <= v < 1.0,
                             message="--validation_split must be in [0, 1)")


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


def learning_rates(hp: dict) -> list | None:
    """The swept learning rates of a run (`hp['learning_rate']` a list), else None."""
    lr = hp["learning_rate"]
    return list(lr) if isinstance(lr, (list, tuple)) else None


def define_generated_data_flags():
    """Flags of the generated toy data (idempotent)."""
    if "num_samples" in FLAGS:
        return
    flags.DEFINE_integer("num_samples", 10000, "number of generated sequences", lower_bound=2)
    flags.DEFINE_integer("data_seed", 0, "seed of the generated data (the same for every "
                         "model seed)")


def hyperparameters(defaults: dict) -> dict:
    """The run's epochs, batch_size, learning_rate, validation_split: flags over defaults."""
    hp = dict(defaults)
    for name in ("epochs", "batch_size", "learning_rate", "validation_split"):
        if FLAGS[name].value is not None:
            hp[name] = FLAGS[name].value
    hp["optimizer"] = FLAGS.optimizer
    return hp


def _preload_output_modules():
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import orbax.checkpoint  # noqa: F401


def use_compilation_cache(path: str | None):
    """Turn on JAX's persistent compilation cache at `path` (every program cached)."""
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _fast_compile_options(num_seeds: int):
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
    "heartbeat_timeout"})

# What a run's workdir holds (removed by --overwrite).
RUN_FILES = ("run.json", "flags.txt", "metrics.json", "timing.json", "history.jsonl",
             "report.txt", "checkpoints", "checkpoint")


def run_flags() -> dict:
    """The flags that define a run's results, as `run.json` holds them: name ->
    value as JSON reads it back (absl's own flags and `OPERATIONAL_FLAGS` left out)."""
    out = {f.name: f.value for module, flag_list in FLAGS.flags_by_module_dict().items()
           if not module.startswith("absl") for f in flag_list
           if f.name not in OPERATIONAL_FLAGS}
    return json.loads(json.dumps(dict(sorted(out.items())), default=str))


def claim_workdir(workdir: str, overwrite: bool) -> bool:
    """Make `workdir` this run's: True when it already holds this run (same
    `run_flags()`: resume, or nothing to do when it is finished), False when
    it is new or was overwritten. `overwrite` removes whatever run it holds
    (the same flags too: the run starts over). Without it, a workdir holding
    another run (other flags, or outputs without a readable run.json) is
    refused with a ValueError naming why; so is one that cannot be created or
    written in (naming the directory at fault and the OS reason; nothing is
    left behind)."""
    now = run_flags()
    record = os.path.join(workdir, "run.json")
    problem = None
    if os.path.exists(record):
        try:
            with open(record) as f:
                theirs = json.load(f)["flags"]
        except (ValueError, KeyError, TypeError):
            problem = "holds run outputs but an unreadable run.json"
        else:
            if theirs == now and not overwrite:
                return True
            diff = [f"--{k}={theirs.get(k, '(unset)')} there, {now.get(k, '(unset)')} here"
                    for k in sorted(set(now) | set(theirs))
                    if theirs.get(k, "(unset)") != now.get(k, "(unset)")]
            problem = (f"holds a run with other flags ({'; '.join(diff[:4])}"
                       f"{'; ...' if len(diff) > 4 else ''})")
    elif any(os.path.exists(os.path.join(workdir, n)) for n in RUN_FILES):
        problem = "holds run outputs but no run.json (a run of an older version, or not a run)"
    if problem is not None or overwrite:
        if not overwrite:
            raise ValueError(f"--workdir={workdir} {problem}: pass --overwrite to replace it, "
                             "or choose another --workdir")
        for n in RUN_FILES:
            p = os.path.join(workdir, n)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.unlink(p)
    try:
        workdir_lib.create(workdir)
    except OSError as e:
        raise ValueError(f"cannot use --workdir={workdir}: {e.filename}: {e.strerror}") from None
    workdir_lib.write_json(record, {"flags": now})
    return False


GO, REFUSED, COMPLETE = 0, 1, 2  # what Run does with a workdir (process 0 tells the others)


class Run:
    """One training run of an experiment, writing into `--workdir` (if given)."""

    def __init__(self, name: str):
        self.name = name
        # With several processes, process 0 writes the outputs; every process
        # writes its shards of the checkpoints.
        self.workdir = FLAGS.workdir if jax.process_index() == 0 else None
        self.checkpoint_dir = (os.path.join(FLAGS.workdir, "checkpoints") if FLAGS.workdir
                               else None)
        self.t_start = time.perf_counter()
        status = GO
        if self.workdir:
            try:
                if (claim_workdir(self.workdir, FLAGS.overwrite)
                        and os.path.exists(self.path("metrics.json"))):
                    status = COMPLETE
            except ValueError as e:  # an expected refusal: one line, no traceback
                print(f"{name}: {e}", file=sys.stderr, flush=True)
                status = REFUSED
        if FLAGS.workdir and jax.process_count() > 1:  # the others wait for process 0's claim
            from jax.experimental import multihost_utils
            status = int(multihost_utils.broadcast_one_to_all(np.int32(status)))
            if status == REFUSED and jax.process_index() > 0:
                print(f"{name}: process 0 refused --workdir={FLAGS.workdir}", file=sys.stderr,
                      flush=True)
        if status == REFUSED:
            sys.exit(1)
        if status == COMPLETE:  # metrics.json is written last: the run is finished
            print(f"{name}: --workdir={FLAGS.workdir} holds this run, already complete; its "
                  "outputs are left as they are (--overwrite trains it again)", flush=True)
            sys.exit(0)
        if self.workdir:
            workdir_lib.write_text(self.path("flags.txt"), FLAGS.flags_into_string())
            # Import what the outputs need while XLA compiles (which releases the GIL).
            self._preload = threading.Thread(target=_preload_output_modules, daemon=True)
            self._preload.start()

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def fit(self, make_model: Callable, x, y, *, loss: str, metrics=(), hp: dict,
            fast_compile: bool = True, validation_data=None) -> rnn_jax.FitResult:
        """`rnn_jax.fit` with the run's flags; history.jsonl is rewritten every epoch
        (a resumed run keeps the lines of the epochs before; they were written
        before the checkpoint it resumes from)."""
        num_seeds = FLAGS.num_seeds
        swept = learning_rates(hp)
        num_members = num_seeds * (len(swept) if swept else 1)
        print(f"{self.name}: {x.shape[0]} samples, x {x.shape[1:]}, y {y.shape[1:]}; "
              f"{hp['optimizer']}(learning_rate={hp['learning_rate']}), batch {hp['batch_size']}, "
              f"{hp['epochs']} epochs, validation_split {hp['validation_split']}; "
              f"{num_seeds} seed{'s' if num_seeds > 1 else ''} from {FLAGS.seed}"
              + (f" per learning rate ({num_members} members)" if swept else ""))
        lines: list[str] = []

        def write_history(epoch, logs, state):
            if not lines and epoch > 1 and os.path.exists(self.path("history.jsonl")):
                with open(self.path("history.jsonl")) as f:  # resumed: the epochs before
                    lines.extend(f.readlines()[:epoch - 1])
            lines.append(workdir_lib.history_line(epoch, logs, num_members))
            workdir_lib.write_text(self.path("history.jsonl"), "".join(lines))

        try:
            result = rnn_jax.fit(
                make_model, x, y, loss=loss, optimizer=hp["optimizer"],
                learning_rate=hp["learning_rate"], metrics=metrics,
                batch_size=hp["batch_size"], epochs=hp["epochs"],
                validation_split=hp["validation_split"], validation_data=validation_data,
                seed=FLAGS.seed, num_seeds=num_seeds,
                callbacks=[write_history] if self.workdir else [],
                checkpoint_dir=self.checkpoint_dir,
                checkpoint_every=FLAGS.checkpoint_every,
                compiler_options=_fast_compile_options(num_members) if fast_compile else None)
        except rnn_jax.NonFiniteLossError as e:
            kept = ("" if not self.workdir else
                    "; no checkpoint was saved before" if e.last_checkpoint is None else
                    f"; the last good checkpoint is {e.last_checkpoint}")
            print(f"{self.name}: {e}{kept}", file=sys.stderr, flush=True)
            sys.exit(1)
        except ValueError as e:
            from rnn_jax import checkpoints  # loaded already when fit had a checkpoint_dir
            if not isinstance(e, checkpoints.CheckpointError):
                raise
            print(f"{self.name}: {e}", file=sys.stderr, flush=True)  # damaged or another run's
            sys.exit(1)
        self.result = result
        return result

    def finish(self, extra_metrics: dict, report: str, plots: Callable[[], list] | None = None):
        """Print the report; write metrics.json, timing.json, report.txt and plots
        (the final checkpoint is already in checkpoints/).

        metrics.json holds only what the run computed (bitwise the same for a
        resumed run); the times are in timing.json.
        """
        print(report)
        r = self.result
        metrics = workdir_lib.final_metrics(r.history, r.num_members)
        metrics.update(num_seeds=r.num_seeds, seed=FLAGS.seed)
        swept = len(r.members[0]) > 1
        if swept:  # lists above are per member: say which is which
            metrics.update(num_members=r.num_members, members=r.members)
        if r.diverged and not swept:
            metrics["diverged_seeds"] = {str(FLAGS.seed + i): {"epoch": e, "step": s}
                                         for i, (e, s) in sorted(r.diverged.items())}
        elif r.diverged:
            metrics["diverged_members"] = {str(i): {**r.members[i], "epoch": e, "step": s}
                                           for i, (e, s) in sorted(r.diverged.items())}
        metrics.update(extra_metrics)
        if not self.workdir:
            return metrics
        self._preload.join()
        from rnn_jax import plots as plots_lib

        workdir_lib.write_text(self.path("report.txt"), report + "\n")
        written = [plots_lib.plot_history(
            r.history, self.path("loss.png"), title=f"{self.name}: loss per epoch")]
        if plots is not None:
            written += plots()
        workdir_lib.write_json(self.path("timing.json"), {
            "compile_seconds": r.compile_seconds, "train_seconds": r.train_seconds,
            "epochs_run": len(r.epoch_seconds), "resumed_from_epoch": r.initial_epoch,
            "wall_seconds": time.perf_counter() - self.t_start})
        workdir_lib.write_json(self.path("metrics.json"), metrics)
        print(f"wrote {self.workdir}: metrics.json, timing.json, history.jsonl, checkpoints/, "
              "report.txt, " + ", ".join(os.path.basename(p) for p in written))
        return metrics


def fmt(a, decimals: int = 3) -> str:
    """A small array rounded for a report line."""
    return np.array2string(np.round(np.asarray(a, dtype=float), decimals), separator=", ",
                           suppress_small=True)
