"""Benchmark-only timers around the phases of `gdexp run`, active when GDEXP_BREAKDOWN is set.

`benchmarks/breakdown.py` puts this folder on PYTHONPATH, so every Python process of a sweep
(the launcher and any joblib workers) loads it at start-up. Watched functions are wrapped right
after their module executes, before other modules bind them with `from x import y`. Each process
writes its totals to ``$GDEXP_BREAKDOWN.<pid>.json`` after every job and at exit.
"""
import os

if os.environ.get("GDEXP_BREAKDOWN"):
    import atexit
    import functools
    import importlib.abc
    import importlib.machinery
    import json
    import sys
    import time

    _OUT = os.environ["GDEXP_BREAKDOWN"]
    _TOTALS = {}   # label -> [seconds, calls, longest, CPU seconds of this process]
    _MARKS = {}    # one-off moments, seconds since the process started

    def _since_start() -> float:
        """Seconds since the kernel started this process (10 ms resolution)."""
        try:
            with open("/proc/self/stat") as fh:
                start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
            with open("/proc/uptime") as fh:
                uptime = float(fh.read().split()[0])
            return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    _MARKS["site_loaded"] = _since_start()

    def _dump():
        data = {"pid": os.getpid(), "argv": sys.argv[:3], "marks": _MARKS, "totals": _TOTALS,
                "alive": _since_start(), "cpu": time.process_time()}
        with open(f"{_OUT}.{os.getpid()}.json", "w") as fh:
            json.dump(data, fh)

    atexit.register(_dump)

    def _timed(label, fn, mark=None, dump=False):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if mark and mark not in _MARKS:
                _MARKS[mark] = _since_start()
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                row = _TOTALS.setdefault(label, [0.0, 0, 0.0, 0.0])
                row[0] += dt
                row[1] += 1
                row[2] = max(row[2], dt)
                row[3] += time.process_time() - c0
                if dump:
                    _dump()
        return wrapper

    # module -> [(attribute path, label, options)]; labels are what breakdown.py prints.
    WATCH = {
        "gdexp.cli": [("main", "gdexp.cli.main", {"mark": "cli_main"}),
                      ("_task", "job: gdexp task (pipeline.execute + glue)", {}),
                      ("_validate_choices", "hydra: sweep batch check (gdexp's, one compose "
                       "per new group choice)", {})],
        "gdexp.pipeline": [("execute", "job: pipeline.execute", {}),
                           ("code_version", "run: code_version (2 git calls)", {}),
                           ("environment_tags", "run: environment_tags", {}),
                           ("_descend", "run: descent.run", {}),
                           ("write_files", "run: write_files (config, trace.npz, csv)", {}),
                           ("prepare", "run: pipeline.prepare (build, checks)", {}),
                           ("start", "mlflow: pipeline.start (create_run here)", {}),
                           ("store_batch", "run: store_batch (rows of log_batch)", {})],
        "gdexp.config": [("build", "run: config.build", {}),
                         ("to_yaml", "run: config.to_yaml", {})],
        "gdexp.tracking": [("client", "mlflow: tracking.client (1st: import mlflow)", {}),
                           ("ensure_experiment", "mlflow: ensure_experiment", {}),
                           ("log", "mlflow: tracking.log (log_batch)", {}),
                           ("find_finished", "mlflow: find_finished", {})],
        "gdexp.callbacks": [("SweepCallback.on_multirun_start",
                             "sweep: on_multirun_start (store, parent run)", {}),
                            ("close_sweep", "sweep: close_sweep", {})],
        "mlflow.tracking.client": [("MlflowClient.create_run", "mlflow: create_run", {}),
                                   ("MlflowClient.log_artifacts", "mlflow: log_artifacts", {}),
                                   ("MlflowClient.set_terminated", "mlflow: set_terminated", {})],
        "hydra._internal.utils": [("_run_hydra", "hydra: _run_hydra (everything)", {})],
        "hydra._internal.config_loader_impl": [
            ("ConfigLoaderImpl.load_configuration", "hydra: compose (load_configuration)", {}),
            ("ConfigLoaderImpl.load_sweep_config", "hydra: per-job compose (load_sweep_config)",
             {})],
        "hydra.core.utils": [("run_job", "job: hydra run_job", {"mark": "first_job",
                                                                 "dump": True}),
                             ("_save_config", "job: hydra writes .hydra/*.yaml", {}),
                             ("configure_log", "job: hydra configure_log", {})],
        "gdexp.batch": [("run_group", "batched: run_group (runs, descent, files, ends)", {}),
                        ("descend_together", "batched: descend_together", {}),
                        ("_diagnose_each", "batched: _diagnose_each", {}),
                        ("_Helpers.start", "batched: helpers start (batches, fork)", {}),
                        ("_write_one", "batched: _write_one (pipeline.finish)", {}),
                        ("_end_one", "batched: _end_one (set_terminated, line)", {})],
        "hydra.core.singleton": [("Singleton.set_state", "joblib: Singleton.set_state", {})],
        "hydra_plugins.hydra_joblib_launcher._core": [
            ("launch", "joblib: launch (all jobs)", {}),
            ("execute_job", "joblib: execute_job (in worker)", {"mark": "first_job_worker"})],
    }

    def _patch(module):
        for path, label, options in WATCH.get(module.__name__, ()):
            owner = module
            *parents, name = path.split(".")
            for part in parents:
                owner = getattr(owner, part, None)
            fn = getattr(owner, name, None) if owner is not None else None
            if fn is None:
                continue
            if isinstance(owner, type) and isinstance(owner.__dict__.get(name), staticmethod):
                setattr(owner, name, staticmethod(_timed(label, fn, **options)))
            else:
                setattr(owner, name, _timed(label, fn, **options))

    class _Loader(importlib.abc.Loader):
        def __init__(self, inner):
            self.inner = inner

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            _patch(module)

        def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
            return getattr(self.inner, name)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname not in WATCH:
                return None
            for finder in sys.meta_path:
                if finder is self:
                    continue
                spec = finder.find_spec(fullname, path, target) \
                    if hasattr(finder, "find_spec") else None
                if spec is not None and spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                    return spec
            return None

    sys.meta_path.insert(0, _Finder())
