"""`mlopsnb --help` and `import mlopsnb` start-up time against a bare `python -c pass`, median of 5 (after one warm-up)."""
import json, statistics, subprocess, sys, time
from pathlib import Path

BIN = Path(sys.executable).parent
CASES = {'python -c pass': [sys.executable, '-c', 'pass'],
         'python -c "import mlopsnb"': [sys.executable, '-c', 'import mlopsnb'],
         'mlopsnb --help': [str(BIN / 'mlopsnb'), '--help'],
         'mlopsnb --version': [str(BIN / 'mlopsnb'), '--version']}

def timed(cmd):
    t = time.perf_counter(); subprocess.run(cmd, capture_output=True, check=True); return time.perf_counter() - t

if __name__ == '__main__':
    for cmd in CASES.values(): timed(cmd)
    times = {k: [] for k in CASES}
    for _ in range(5):
        for k, cmd in CASES.items(): times[k].append(timed(cmd))
    base = statistics.median(times['python -c pass'])
    res = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'command':30s} {'median s':>9s} {'vs python':>10s}")
    for k, v in res.items(): print(f"{k:30s} {v:9.3f} {v / base:9.2f}x")
    out = Path(__file__).parent / 'results'; out.mkdir(exist_ok=True)
    (out / 'cli_startup.json').write_text(json.dumps({'median_s': res, 'goal_help_s': 0.3, 'help_ok': res['mlopsnb --help'] <= 0.3}, indent=1))
