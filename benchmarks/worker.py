"""Runs one framework's share of `benchmarks.compare` in its own process.

    python -m benchmarks.worker FRAMEWORK

`FRAMEWORK` names a module `benchmarks.frameworks.<FRAMEWORK>` (for Keras,
`keras_tf` and `keras_jax` both run `benchmarks.frameworks.keras_fit` with
`KERAS_BACKEND` set before Keras is imported, since Keras fixes its backend at
import). The worker stays up and serves tasks one at a time, so that
`benchmarks.compare` can give each task to every framework in turn:

- it first writes one JSON line, `{"framework", "versions"}`, or
  `{"framework", "unavailable"}` (an optional framework that is not
  installed; the worker then exits);
- then, for each JSON line `{"kind": ..., ...}` read from standard input, the
  module's function of that name runs the task and the worker writes one JSON
  line: the task's record `{"task", "first": s, "times": [s, ...], "wall"}`
  (optionally `"compile"`, `"note"`), or `{"task", "unsupported": true}` for a
  kind the module has no function for, or `{"task", "error": ...}`;
- it exits at the end of its input.

The JSON lines go to the standard output the worker was started with; anything
the frameworks print goes to standard error.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

MODULES = {"keras_tf": "keras_fit", "keras_jax": "keras_fit"}
BACKENDS = {"keras_tf": "tensorflow", "keras_jax": "jax"}


def run_task(module, task) -> dict:
    """The record of one task (errors are recorded, not raised)."""
    fn = getattr(module, task["kind"], None)
    record = {"task": task}
    if fn is None:
        record["unsupported"] = True
        return record
    t0 = time.perf_counter()
    try:
        record.update(fn(**{k: v for k, v in task.items() if k != "kind"}))
    except Exception as e:  # recorded, and the other tasks go on
        record["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    record["wall"] = time.perf_counter() - t0
    return record


def main(argv):
    framework = argv[1]
    # Results go to the real standard output; prints of the frameworks to stderr.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def send(obj):
        results.write(json.dumps(obj) + "\n")
        results.flush()

    if framework in BACKENDS:
        os.environ["KERAS_BACKEND"] = BACKENDS[framework]
    try:
        module = importlib.import_module(f"benchmarks.frameworks.{MODULES.get(framework, framework)}")
    except ImportError as e:  # an optional framework that is not installed
        send({"framework": framework, "unavailable": f"{type(e).__name__}: {e}"})
        return 0
    send({"framework": framework, "versions": getattr(module, "versions", dict)()})
    for line in sys.stdin:
        if line.strip():
            task = json.loads(line)
            record = run_task(module, task)
            print(f"{framework}: {task} -> "
                  f"{record.get('error') or ('unsupported' if record.get('unsupported') else 'ok')}",
                  file=sys.stderr, flush=True)
            send(record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
