"""Notebook-first MLOps: the notebooks you explore in become the package, the training jobs, the tests and the exported model.

Modules:

- `mlopsnb.cli`: The `mlopsnb` command. It starts fast: only argparse is imported up front, and each subcommand imports its module (and so torch, fastai or mlflow) when it runs."""

__version__ = "0.0.1"
