"""`mlopsnb sweep` (TPE + median pruning) against the 3x3 grid of `mlopsnb run --grid`, side by side in one run, on the
MNIST job (nbs/jobs/train_mnist.ipynb: `-p limit N` images, `-p epochs E`, no data analysis, no export).

- grid: `mlopsnb run train_mnist.ipynb --grid lr=A,B,C --grid bs=32,64,128 -j J`: 9 jobs of E epochs each;
- sweep: `mlopsnb sweep train_mnist.ipynb --space lr=loguniform:A:C --space bs=choice:32,64,128 --trials T -j J
  --metric accuracy --sampler tpe --pruner median --seed S` (T defaults to 9, the grid's count of trainings: the fixed
  budget is the number of trainings; pruning is what saves epochs). The median pruner (mlopsnb.study.make_pruner)
  starts after 4 finished trials and prunes from the second epoch.

Each side has its own throwaway sqlite MLflow store; both run with MLOPSNB_DAEMON=0 (the sweep does not use the warm
runner: its trials run in the sweep process with a pool of pre-started kernels, `mlopsnb.kernels.KernelPool`, so the
grid is given no warm runner either). From each store: the best validation accuracy (the largest last-epoch
`accuracy` of any run), the training epochs spent (the length of every run's per-epoch `accuracy` history, summed)
and the wall time of the command. The validation split is 20% of `limit`, so one image is 100/(0.2*limit) points.

Per-trial overhead of the sweep machinery, in this process, on tests/notebooks/sweep_quadratic.ipynb (1 step, no
torch): R plain jobs through `mlopsnb.jobs.run_jobs` (what `mlopsnb run` runs, here without the warm runner), then a
sweep of R trials through `mlopsnb.sweep.run_sweep`; per trial, Optuna's trial time (ask to tell, which holds the job)
minus the job's own time is what the sweep adds: with one worker, from a trial's start to the next trial's start (the
whole loop: claiming under the lock, suggesting, the job, telling, tagging the run, the progress line), minus the job.

With T = 9 the epoch goal is out of reach by construction: the median pruner lets the first 4 trials run all E epochs
and stops the others after 2 at the earliest, so the sweep spends at least (4E + 5*2) / 9E of the grid's epochs (81% at
E = 3, 63% at E = 6); <= 50% needs fewer trials (`--trials 5` with E >= 4 at best) or a stricter pruner.

Goals (issue 11): the sweep within 0.3 points of the grid's best accuracy with <= 50% of the grid's epochs; the sweep's
per-trial overhead <= 0.2 s (with the warm runner, which the sweep does not use yet).

Prints the load average with the figures and a summary table; writes bench/results/sweep.json.
Usage: python bench/sweep.py [--quick] [--limit N] [--epochs E] [--lrs A,B,C] [--trials T] [-j J] [--reps R]
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
NB = ROOT / 'nbs' / 'jobs' / 'train_mnist.ipynb'
QUAD = ROOT / 'tests' / 'notebooks' / 'sweep_quadratic.ipynb'
BSS = '32,64,128'


def load() -> str: return '/'.join(f'{x:.2f}' for x in os.getloadavg())


def env_for(store:Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLFLOW_', 'MLOPSNB_'))}
    return {**env, 'MLFLOW_TRACKING_URI': f"sqlite:///{store}/mlflow.db", 'MLOPSNB_DAEMON': '0', 'CI': '1', 'MPLBACKEND': 'Agg'}


def run_side(name:str, args:list, store:Path) -> dict:
    "Run one side's command in its own store; its wall time, and its runs' accuracy and epochs"
    store.mkdir(parents=True)
    l0, t = os.getloadavg(), time.perf_counter()
    r = subprocess.run([str(BIN / 'mlopsnb'), *map(str, args)], cwd=store, env=env_for(store), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    (store / 'out.txt').write_text(r.stdout + r.stderr)
    if r.returncode != 0: raise RuntimeError(f"{name} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient
    c = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = c.get_experiment_by_name('train_mnist')
    runs = [x for x in c.search_runs([exp.experiment_id], max_results=1000) if x.data.tags.get('mlopsnb.sweep') != 'parent']
    per = [{'lr': float(x.data.params.get('lr', 'nan')), 'bs': int(x.data.params.get('bs', 0)), 'accuracy': x.data.metrics.get('accuracy'),
            'epochs': len(c.get_metric_history(x.info.run_id, 'accuracy')), 'state': x.data.tags.get('mlopsnb.trial_state', x.info.status)}
           for x in runs]
    best = max((p for p in per if p['accuracy'] is not None), key=lambda p: p['accuracy'])
    res = {'wall_s': wall, 'runs': len(per), 'epochs': sum(p['epochs'] for p in per), 'best_accuracy': best['accuracy'], 'best': best,
           'per_run': per, 'load_before': l0, 'load_after': os.getloadavg()}
    print(f"{name}: {len(per)} runs, {res['epochs']} epochs, best accuracy {best['accuracy']:.4f} (lr {best['lr']:.3g}, bs {best['bs']}) "
          f"in {wall:.0f} s; load {load()}", flush=True)
    return res


def overhead(work:Path, reps:int) -> dict:
    "Per-trial cost of the sweep machinery: plain jobs, then a sweep's trials, of the same 1-step notebook"
    from mlopsnb.jobs import run_jobs
    from mlopsnb.sweep import plan_sweep, run_sweep
    work.mkdir(parents=True)
    env, uri = env_for(work), f"sqlite:///{work}/mlflow.db"
    plain = []
    for i in range(reps + 1):  # the first one creates the store: not counted
        t = time.perf_counter()
        (r,) = run_jobs([(str(QUAD), {'x': 0.1 * i, 'steps': 1})], 1, progress=False, tracking_uri=uri, env=env, cwd=work)
        if not r.ok: raise RuntimeError(f"plain job failed: {r.error}")
        if i: plain.append(time.perf_counter() - t)
    plan = plan_sweep(str(QUAD), ['x=uniform:-1:1'], [['steps', '1']], trials=reps + 1, metric='loss', pruner='none', seed=0,
                      tracking_uri=uri, env=env, cwd=work)
    t = time.perf_counter()
    with open(os.devnull, 'w') as quiet: study, results = run_sweep(plan, file=quiet)
    sweep_wall = time.perf_counter() - t
    job = {r['number']: r['duration'] for r in results if 'number' in r}
    trial = {x.number: x.duration.total_seconds() for x in study.trials if x.duration is not None}
    starts = sorted((x.number, x.datetime_start.timestamp()) for x in study.trials)
    # one worker: a trial's whole loop (claim, job, tell, tags, progress) is the time from its start to the next trial's
    added = [(b[1] - a[1]) - job[a[0]] for a, b in zip(starts, starts[1:]) if a[0] in job]
    res = {'plain_job_s': plain, 'sweep_trial_s': list(trial.values()), 'sweep_job_s': list(job.values()), 'added_s': added,
           'sweep_wall_s': sweep_wall, 'plain_median_s': statistics.median(plain), 'trial_median_s': statistics.median(trial.values()),
           'added_median_s': statistics.median(added), 'load': os.getloadavg()}
    print(f"overhead: plain job {res['plain_median_s']:.2f} s, sweep trial {res['trial_median_s']:.2f} s (job inside it "
          f"{statistics.median(job.values()):.2f} s), added by the sweep {res['added_median_s']:.3f} s (medians of {reps}); load {load()}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke size: limit 600, 3 epochs, 3 overhead reps')
    ap.add_argument('--limit', type=int, default=5000, help='MNIST images (-p limit): 80%% train, 20%% valid')
    ap.add_argument('--epochs', type=int, default=6, help='epochs of every training (-p epochs)')
    ap.add_argument('--lrs', default='1e-3,5e-3,2e-2', help="the grid's three learning rates; the sweep searches loguniform from the smallest to the largest")
    ap.add_argument('--trials', type=int, default=9, help="the sweep's --trials (default: the grid's 9 trainings)")
    ap.add_argument('-j', '--jobs', type=int, default=2, help='trainings at a time, both sides')
    ap.add_argument('--seed', type=int, default=0, help="the sampler's seed and the job's seed")
    ap.add_argument('--reps', type=int, default=5, help='jobs and trials timed for the overhead (at least 2)')
    ap.add_argument('--keep', action='store_true', help='keep the work folder (stores, executed notebooks)')
    ap.add_argument('--skip-overhead', action='store_true')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'sweep.json'))
    a = ap.parse_args()
    if a.quick: a.limit, a.epochs, a.reps = 600, 3, 3
    a.reps = max(a.reps, 2)
    lrs = [float(x) for x in a.lrs.split(',')]
    fixed = ['-p', 'epochs', a.epochs, '-p', 'limit', a.limit, '-p', 'seed', a.seed, '-p', 'analyze_data', 'False', '-p', 'export', 'False']
    res = {'machine': platform.platform(), 'cpus': os.cpu_count(), 'args': vars(a), 'load_before': os.getloadavg()}
    print(f"load average at start: {load()} on {os.cpu_count()} CPUs; MNIST limit {a.limit} ({int(a.limit * 0.2)} valid images: "
          f"1 image = {100 / (a.limit * 0.2):.2f} points), {a.epochs} epochs, -j {a.jobs}", flush=True)
    work = Path(tempfile.mkdtemp(prefix='mlopsnb-bench-sweep-'))
    res['grid'] = run_side('grid', ['run', NB, '--grid', f"lr={a.lrs}", '--grid', f"bs={BSS}", '-j', a.jobs, *fixed], work / 'grid')
    res['sweep'] = run_side('sweep', ['sweep', NB, '--space', f"lr=loguniform:{min(lrs)}:{max(lrs)}", '--space', f"bs=choice:{BSS}",
                                      '--trials', a.trials, '-j', a.jobs, '--metric', 'accuracy', '--sampler', 'tpe', '--pruner', 'median',
                                      '--seed', a.seed, *fixed], work / 'sweep')
    if not a.skip_overhead: res['overhead'] = overhead(work / 'overhead', a.reps)
    res['load_after'] = os.getloadavg()
    g, s = res['grid'], res['sweep']
    gap, frac = 100 * (g['best_accuracy'] - s['best_accuracy']), s['epochs'] / g['epochs']
    res['goals'] = {'accuracy_gap_points': gap, 'epoch_fraction': frac, 'sweep_goal_met': gap <= 0.3 and frac <= 0.5}
    lb, la = res['load_before'], res['load_after']
    print(f"\n== mlopsnb sweep (TPE + median pruning) vs mlopsnb run --grid (3x3), train_mnist limit {a.limit}, {a.epochs} epochs, -j {a.jobs}, {res['cpus']} CPUs")
    print(f"load average (1/5/15 min) at start {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, at end {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}")
    print(f"{'side':<7} {'trainings':>9} {'pruned':>6} {'epochs':>6} {'best acc %':>10} {'best lr':>8} {'best bs':>7} {'wall s':>7}")
    for name, x in (('grid', g), ('sweep', s)):
        pruned = sum(p['state'] == 'PRUNED' for p in x['per_run'])
        print(f"{name:<7} {x['runs']:>9} {pruned:>6} {x['epochs']:>6} {100 * x['best_accuracy']:>10.2f} {x['best']['lr']:>8.3g} {x['best']['bs']:>7} {x['wall_s']:>7.0f}")
    print(f"{'sweep/grid':<7} {s['runs'] / g['runs']:>9.2f} {'':>6} {frac:>6.2f} {-gap:>+10.2f} {'':>8} {'':>7} {s['wall_s'] / g['wall_s']:>7.2f}")
    yn = lambda b: 'MET' if b else 'NOT MET'
    print(f"goal: the sweep within 0.3 points of the grid's best accuracy (sweep - grid: {-gap:+.2f} points) with <= 50% of its epochs "
          f"({100 * frac:.0f}%): {yn(res['goals']['sweep_goal_met'])}")
    if 'overhead' in res:
        o = res['overhead']
        print(f"per-trial overhead (quadratic notebook, 1 step, medians of {a.reps}): plain run_jobs {o['plain_median_s']:.2f} s, "
              f"sweep trial {o['trial_median_s']:.2f} s; added by the sweep around the job {o['added_median_s']:.3f} s "
              f"(goal <= 0.2 s: {yn(o['added_median_s'] <= 0.2)}). The sweep does NOT use the warm runner (mlopsnb.daemon): its trials "
              "run in the sweep process with pre-started kernels; neither side used the warm runner here.")
    if a.quick: print("(--quick: a smoke run; one validation image is a large step of accuracy)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    if not a.keep: shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.out}" + (f"; work folder kept: {work}" if a.keep else ''))


if __name__ == '__main__':
    main()
