"""Notebook-first MLOps: the notebooks you explore in become the package, the training jobs, the tests and the exported model.

Modules:

- `mlopsnb.cli`: The `mlopsnb` command. It starts fast: only argparse is imported up front, and each subcommand imports its module (and so torch, fastai or mlflow) when it runs.
- `mlopsnb.jobs`: Parameterized notebooks as tracked, reproducible jobs: the parameter contract, papermill execution in a kernel pinned to this interpreter, one MLflow run per job, grids, `--reuse`, and the `mlopsnb run/params/runs` commands."""

__version__ = "0.0.1"
