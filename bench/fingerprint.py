"""`mlopsnb.core.fingerprint` throughput on a 1 GB folder (256 files of 4 MiB) against `cat` reading the same files
(the disk/page-cache floor) and single-threaded hashlib.sha256, measured alternately; medians of 3."""
import hashlib, json, os, statistics, subprocess, tempfile, time
from pathlib import Path
from mlopsnb.core import fingerprint

def make_folder(n=256, size=4 << 20) -> Path:
    d = Path(tempfile.mkdtemp(prefix='fp_bench_'))
    for i in range(n): (d / f'{i:04d}.bin').write_bytes(os.urandom(size))
    return d

def sha256_serial(d):
    for f in sorted(d.iterdir()):
        h = hashlib.sha256()
        with open(f, 'rb') as fh:
            while b := fh.read(1 << 20): h.update(b)

def cat_all(d): subprocess.run(f'cat {d}/* > /dev/null', shell=True, check=True)

if __name__ == '__main__':
    d = make_folder(); gb = sum(f.stat().st_size for f in d.iterdir()) / 1e9
    variants = {'cat (read floor)': cat_all, 'sha256 serial': sha256_serial, 'mlopsnb fingerprint': fingerprint}
    for f in variants.values(): f(d)
    times = {k: [] for k in variants}
    for _ in range(3):
        for k, f in variants.items():
            t = time.perf_counter(); f(d); times[k].append(time.perf_counter() - t)
    res = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'variant':22s} {'median s':>9s} {'GB/s':>7s}")
    for k, v in res.items(): print(f"{k:22s} {v:9.3f} {gb / v:7.2f}")
    out = Path(__file__).parent / 'results'; out.mkdir(exist_ok=True)
    (out / 'fingerprint.json').write_text(json.dumps({'gb': gb, 'median_s': res}, indent=1))
    subprocess.run(['rm', '-rf', str(d)])
