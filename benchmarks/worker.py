"""Runs one framework's share of `benchmarks.compare` in its own process.

    python -m benchmarks.worker FRAMEWORK TASKS.json OUT.json

`FRAMEWORK` names a module `benchmarks.frameworks.<FRAMEWORK>` (for Keras,
`keras_tf` and `keras_jax` both run `benchmarks.frameworks.keras_fit` with
`KERAS_BACKEND` set before Keras is imported, since Keras fixes its backend at
import). `TASKS.json` is a list of tasks `{"kind": ..., ...}`; the module's
function of that name runs it and returns `{"first": s, "times": [s, ...]}`
(optionally `"compile"`, `"note"`). A kind the module has no function for is
recorded as unsupported. Results are rewritten to `OUT.json` (atomically)
after every task, so a worker stopped by the timeout keeps what it measured.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

from rnn_jax.workdir import write_json

MODULES = {"keras_tf": "keras_fit", "keras_jax": "keras_fit"}
BACKENDS = {"keras_tf": "tensorflow", "keras_jax": "jax"}


def main(argv):
    framework, tasks_path, out_path = argv[1:4]
    if framework in BACKENDS:
        os.environ["KERAS_BACKEND"] = BACKENDS[framework]
    out = {"framework": framework, "results": []}
    try:
        name = MODULES.get(framework, framework)
        module = importlib.import_module(f"benchmarks.frameworks.{name}")
    except ImportError as e:  # an optional framework that is not installed
        out["unavailable"] = f"{type(e).__name__}: {e}"
        write_json(out_path, out)
        return 0
    out["versions"] = getattr(module, "versions", dict)()
    with open(tasks_path) as f:
        tasks = json.load(f)
    for task in tasks:
        fn = getattr(module, task["kind"], None)
        record = {"task": task}
        if fn is None:
            record["unsupported"] = True
        else:
            t0 = time.perf_counter()
            try:
                record.update(fn(**{k: v for k, v in task.items() if k != "kind"}))
            except Exception as e:  # recorded, and the other tasks go on
                record["error"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            record["wall"] = time.perf_counter() - t0
        out["results"].append(record)
        write_json(out_path, out)
        print(f"{framework}: {task} -> "
              f"{record.get('error') or ('unsupported' if record.get('unsupported') else 'ok')}",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
