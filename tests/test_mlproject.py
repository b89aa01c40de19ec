"""MLflow Projects: `mlopsnb mlproject` writes an MLproject from job notebooks, and the real `mlflow run` of it gives a
FINISHED run carrying mlopsnb's tags and the executed notebook (the job uses the run `mlflow run` created)."""
import json, os, subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_mlflow_run_of_the_generated_project(tmp_path):
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'p', 'metadata': {'tags': ['parameters']}, 'outputs': [],
                     'source': "x: int = 3      # a number\nname: str = 'a'"},
                    {'cell_type': 'code', 'execution_count': None, 'id': 'w', 'metadata': {}, 'outputs': [],
                     'source': "import mlflow\nmlflow.log_metric('double', 2 * x)\nprint(name, x)"}],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / 'tiny.ipynb').write_text(json.dumps(nb))
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update({'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0', 'PATH': f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path}/store.db"})
    r = subprocess.run([str(BIN / 'mlopsnb'), 'mlproject', 'tiny.ipynb', '--name', 'demo'], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and 'entry point: tiny' in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(BIN / 'mlflow'), 'run', '.', '-e', 'tiny', '-P', 'x=1', '--env-manager', 'local'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    from mlflow.tracking import MlflowClient
    c = MlflowClient(env['MLFLOW_TRACKING_URI'])
    runs = [run for e in c.search_experiments() for run in c.search_runs([e.experiment_id])]
    assert len(runs) == 1, [(x.info.run_id, x.info.status) for x in runs]  # the job used the run `mlflow run` made
    run = runs[0]
    assert run.info.status == 'FINISHED'
    tags = run.data.tags
    assert tags['mlopsnb.notebook'] == 'tiny.ipynb' and tags['mlopsnb.notebook_sha'] and tags['mlopsnb.env_hash'], tags
    assert tags.get('mlflow.project.entryPoint') == 'tiny'  # MLflow's own tags are kept
    assert run.data.metrics == {'double': 2.0} and run.data.params['x'] == '1' and run.data.params['name'] == 'a'
    assert 'tiny.ipynb' in {a.path for a in c.list_artifacts(run.info.run_id)}
