"""What `mlopsnb run` costs on top of `python script.py`.

1. Fixed overhead: an empty notebook through `mlopsnb run` vs an empty `python script.py`, both with the warm runner
   (the default: `mlopsnb.daemon`, started by the warm-up call) and without it (`MLOPSNB_DAEMON=0`: MLflow, papermill and
   a kernel are started in the command for every job), and papermill alone (what executing a notebook costs with no tracking: 2.1-2.6 s here).
2. Proportional overhead: the train_mnist job (~60 s of training) through `mlopsnb run` (warm runner) vs the same code
   cells as a script run with `python` (the script also logs to MLflow: `start_run` opens its own run outside a job).

Runs alternate A/B, after a warm-up of each, on one warm sqlite store; medians and ratios are reported.
Goals (issue 4): fixed overhead <= 1.5 s; <= 3% on a ~60 s job.

Usage: python bench/job_overhead.py [--reps N] [--train-reps N] [--epochs E] [--skip-train]
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMPTY_NB = REPO / 'tests' / 'notebooks' / 'empty.ipynb'
TRAIN_NB = REPO / 'nbs' / 'jobs' / 'train_mnist.ipynb'


LAST_OUT = {}

def timed(cmd:list[str], cwd:Path, env:dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0: raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    LAST_OUT[cmd[0] if cmd[0] != sys.executable else cmd[1]] = r.stdout + r.stderr
    return dt


def notebook_as_script(nb:Path, out:Path, params:dict) -> Path:
    "The notebook's code cells as a script, with `params` assigned after the parameters cell (as papermill does)"
    cells = json.loads(nb.read_text())['cells']
    parts = []
    for c in cells:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        parts.append('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            parts.append('\n'.join(f'{k} = {v!r}' for k, v in params.items()))
    out.write_text('\n\n'.join(parts) + '\n')
    return out


def ab(name_a:str, cmd_a:list, name_b:str, cmd_b:list, reps:int, cwd:Path, env:dict, warmup:bool=True, env_b:dict|None=None) -> dict:
    env_b = env_b or env
    if warmup:
        timed(cmd_a, cwd, env); timed(cmd_b, cwd, env_b)
    a, b = [], []
    for i in range(reps):
        a.append(timed(cmd_a, cwd, env)); b.append(timed(cmd_b, cwd, env_b))
        print(f"  rep {i + 1}/{reps}: {name_a} {a[-1]:.2f}s  {name_b} {b[-1]:.2f}s", flush=True)
    ma, mb = statistics.median(a), statistics.median(b)
    return {name_a: a, name_b: b, f'{name_a}_median': ma, f'{name_b}_median': mb, 'overhead_s': mb - ma, 'ratio': mb / ma}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=5, help='A/B pairs for the empty notebook')
    ap.add_argument('--train-reps', type=int, default=2, help='A/B pairs for the training job')
    ap.add_argument('--epochs', type=int, default=10, help='epochs of the training job (the default 10: 40-60 s on a 2-core CPU)')
    ap.add_argument('--skip-train', action='store_true')
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='job_overhead-'))
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db", MPLBACKEND='Agg', PYTHONWARNINGS='ignore',
               MLOPSNB_DAEMON='1', MLOPSNB_DAEMON_DIR=str(work / 'runner'))
    cold = {**env, 'MLOPSNB_DAEMON': '0'}
    (work / 'empty.py').write_text('pass\n')
    mlopsnb = str(BIN / 'mlopsnb')
    res = {'machine': platform.platform(), 'cpus': os.cpu_count(), 'load_before': os.getloadavg()}
    try: run_all(a, work, env, cold, mlopsnb, res)
    finally: subprocess.run([mlopsnb, 'daemon', 'stop'], env=env, capture_output=True)


def run_all(a, work, env, cold, mlopsnb, res):
    print('== fixed overhead: empty notebook, warm runner (the default)', flush=True)
    res['empty'] = ab('script', [sys.executable, 'empty.py'], 'mlopsnb_run', [mlopsnb, 'run', str(EMPTY_NB), '--out', 'out'],
                      a.reps, work, env)
    print('== fixed overhead: empty notebook, MLOPSNB_DAEMON=0 (everything started per job)', flush=True)
    res['empty_cold'] = ab('script', [sys.executable, 'empty.py'], 'mlopsnb_run', [mlopsnb, 'run', str(EMPTY_NB), '--out', 'out'],
                           max(2, a.reps // 2), work, cold, env_b=cold)
    pm = [sys.executable, '-c', f"import papermill as pm; pm.execute_notebook({str(EMPTY_NB)!r}, 'pm_out.ipynb', kernel_name='python3', progress_bar=False)"]
    print('== papermill alone (reference)', flush=True)
    res['papermill'] = ab('script', [sys.executable, 'empty.py'], 'papermill', pm, max(2, a.reps // 2), work, cold, warmup=True)

    if not a.skip_train:
        print(f'== training job: train_mnist, epochs={a.epochs}', flush=True)
        script = notebook_as_script(TRAIN_NB, work / 'train_mnist.py', {'epochs': a.epochs})
        res['train'] = ab('script', [sys.executable, script.name], 'mlopsnb_run',
                          [mlopsnb, 'run', str(TRAIN_NB), '-p', 'epochs', str(a.epochs), '--out', 'out_train'],
                          a.train_reps, work, env, warmup=False)
        res['train']['accuracy_lines'] = [l for v in LAST_OUT.values() for l in v.splitlines() if l.startswith('valid accuracy')]
    # where the fixed time goes: one more empty job each way, with the phase timings (s since the job started)
    for key, e in (('empty_phases', env), ('empty_cold_phases', cold)):
        r = subprocess.run([mlopsnb, 'run', str(EMPTY_NB), '--out', 'out'], cwd=work, env={**e, 'MLOPSNB_TIMINGS': '1'}, capture_output=True, text=True)
        line = next((l for l in r.stderr.splitlines() if l.startswith('timings: {')), None)
        res[key] = json.loads(line[len('timings: '):]) if line else None
    res['load_after'] = os.getloadavg()

    rows = [('empty nb, warm runner', res['empty']['script_median'], res['empty']['mlopsnb_run_median'], res['empty']['overhead_s'],
             res['empty']['ratio'], '<= 1.5 s'),
            ('empty nb, DAEMON=0', res['empty_cold']['script_median'], res['empty_cold']['mlopsnb_run_median'],
             res['empty_cold']['overhead_s'], res['empty_cold']['ratio'], '(cold path)'),
            ('papermill alone, empty', res['papermill']['script_median'], res['papermill']['papermill_median'],
             res['papermill']['overhead_s'], res['papermill']['ratio'], '(reference)')]
    if 'train' in res:
        rows.append((f'train_mnist ({a.epochs} ep), runner', res['train']['script_median'], res['train']['mlopsnb_run_median'],
                     res['train']['overhead_s'], res['train']['ratio'], '<= 3%'))
    print(f"\nload average before/after: {res['load_before'][0]:.1f} / {res['load_after'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':<26} {'python script':>13} {'mlopsnb/pm':>11} {'overhead':>9} {'ratio':>7} {'overhead %':>10}  goal")
    for name, s, j, o, r, goal in rows:
        print(f"{name:<26} {s:>12.2f}s {j:>10.2f}s {o:>8.2f}s {r:>6.2f}x {100 * o / s:>9.1f}%  {goal}")
    if res.get('empty_phases'): print('phases of one empty job, warm runner (s since start):', res['empty_phases'])
    if res.get('empty_cold_phases'): print('phases of one empty job, DAEMON=0 (s since start):', res['empty_cold_phases'])
    if 'train' in res: print('\n'.join(res['train']['accuracy_lines']))
    out = REPO / 'bench' / 'results' / 'job_overhead.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
