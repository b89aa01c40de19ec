"""`mlopsnb serve` against `mlflow models serve`, side by side, on the same MNIST CNN registered in MLflow.

One run, one machine, loopback only. The servers, each a subprocess started once and kept up for the whole run:

- `mlflow models serve -m models:/NAME/1 --env-manager local` (the pyfunc wrapper that `mlopsnb.registry.log_bundle`
  logs), sent `{"inputs": [[28x28 uint8]]}` on /invocations (the logged signature is a uint8 tensor (-1, 28, 28));
- `mlopsnb serve models:/NAME@champion` (1 worker, the default), sent `{"array": [28x28 uint8]}` on /predict;
- `mlopsnb serve ... --workers 2`, the same, as an extra row;
- a bare reference: a trivial Starlette app on uvicorn that reads the same body as mlopsnb's and answers a constant
  JSON the size of mlopsnb's answer: what one loopback HTTP round trip costs with no model and no parsing.

Both model servers read the same throwaway `sqlite:///TMP/mlflow.db` (MLFLOW_TRACKING_URI). The bundle is trained
here (mnist_5k, a small CNN, 1 epoch, `export_bundle(dynamo=False)`) in a child process, so torch, fastai and mlflow
stay out of the client's process; `--bundle DIR` reuses one.

The client, this script's process: httpx.AsyncClient with 1 and 8 concurrent clients (keep-alive, one connection
each), one image per request, the same held-out digits for every server, a fixed request count per setting
(`--requests`) and a time bound (`--max-seconds`). After a warm-up of each server, rounds alternate the servers
(A/B/A/B, reversed every other round) so drift in the machine's load hits them alike; each statistic is the median
over rounds. At 1 client the in-process reference, `Bundle.predict` on the digit, is timed in the same rounds.
On 2 cores the client competes with the servers: httpx costs the client ~2 ms of CPU a request, so at 8 clients it
can cap every server near the bare round trip's rate; `--client raw` (a minimal HTTP/1.1 client on asyncio streams,
~0.2 ms a request) leaves the cores to the servers. The summary says when the client looks like the ceiling.
Errors are non-200 answers and failed requests; latencies are of 200s only. The CPU the servers (process trees)
and the client used per request is recorded to show who was short of cores.

Goals (issue 15): at 8 clients mlopsnb >= 3x mlflow's req/s with p99 <= mlflow's; at 1 client mlopsnb's p50 within
1.2x of (in-process predict p50 + bare round-trip p50).

Prints the load average at start and end and a summary table; writes bench/results/serve.json.
Usage: python bench/serve.py [--requests N] [--max-seconds S] [--rounds R] [--clients 1,8] [--bundle DIR] [--client raw]
"""
from __future__ import annotations
import argparse, asyncio, collections, contextlib, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
NAME = 'mnist-cnn-bench'
HEADERS = {'content-type': 'application/json'}

# A trivial server for the round-trip reference: reads the request body, answers a constant body (argv: port, file).
BARE_SERVER = r'''
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
body = open(sys.argv[2], 'rb').read()
async def predict(request):
    await request.body()
    return Response(body, media_type='application/json')
async def ready(request): return Response(b'{"ready": true}', media_type='application/json')
app = Starlette(routes=[Route('/predict', predict, methods=['POST']), Route('/ready', ready)])
uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', access_log=False)
'''


# ---------------------------------------------------------------------------------------------------------------------
# The bundle and its registration, in a child process (`--_build`)

def small_cnn(n_classes=10):
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 4 * 4, n_classes))


def build(work:Path, bundle:str|None) -> None:
    "Train and export the bundle (unless given), register it as NAME with alias champion, save held-out digits"
    from mlopsnb.datasets import mnist_5k, stratified_split
    data = mnist_5k()
    trn, val = stratified_split(data.y, 0.2, seed=0)
    t0 = time.time()
    if bundle is None:
        import torch
        from fastai.learner import Learner
        from fastai.losses import CrossEntropyLossFlat
        import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
        from fastai.callback.progress import ProgressCallback  # noqa: F401  (Learner.no_bar)
        from mlopsnb.loaders import tensor_dls, NormalizeImages
        from mlopsnb.export import export_bundle
        torch.manual_seed(0)
        norm = NormalizeImages(float(data.x[trn].mean() / 255), float(data.x[trn].std() / 255))
        dls = tensor_dls(torch.from_numpy(data.x[trn]), torch.from_numpy(data.y[trn]), torch.from_numpy(data.x[val]),
                         torch.from_numpy(data.y[val]), bs=64, device='cpu', tfms=[norm])
        learn = Learner(dls, small_cnn(), loss_func=CrossEntropyLossFlat())
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 5e-3)
        bundle = str(export_bundle(learn, work / 'mnist', classes=data.classes, dynamo=False))
    t_train = time.time() - t0
    t0 = time.time()
    from mlopsnb.registry import log_bundle
    info = log_bundle(bundle, registered_name=NAME, alias='champion')
    np.savez(work / 'digits.npz', x=data.x[val[:500]], y=data.y[val[:500]])
    (work / 'build.json').write_text(json.dumps({'bundle': str(Path(bundle).resolve()), 'version': str(info.registered_model_version),
                                                 'train_s': t_train, 'log_s': time.time() - t0}))


# ---------------------------------------------------------------------------------------------------------------------
# Servers

@contextmanager
def process_server(argv:list, ready_url:str, name:str, env:dict, cwd:Path, log:Path, timeout:float):
    "Run a server command in its own process group, wait until `ready_url` answers 200; kill the group at the end"
    import urllib.request
    t0 = time.perf_counter()
    with open(log, 'wb') as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None: raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.perf_counter() - t0 > timeout: raise TimeoutError(f"{name} was not ready within {timeout:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc.pid, time.perf_counter() - t0
    finally: stop_group(proc)


def stop_group(proc:subprocess.Popen) -> None:
    "SIGTERM the process group, SIGKILL it after 15 s"
    try: os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError: pass
    try: proc.wait(15)
    except subprocess.TimeoutExpired:
        try: os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        proc.wait()


@contextmanager
def mlopsnb_server(model:str, env:dict, log_dir:Path, timeout:float, **options):
    "`mlopsnb.serve.serving`, plus the server's pid (found among our children by its port) and its start-up time"
    from mlopsnb.serve import serving, free_port
    port, t0 = free_port(), time.perf_counter()
    with serving(model, port=port, timeout=timeout, env=env, log=str(log_dir), **options) as url:
        dt = time.perf_counter() - t0
        yield url, _child_with_port(port), dt


def _child_with_port(port:int) -> int|None:
    try: import psutil
    except ImportError: return None
    for p in psutil.Process().children():
        try:
            if str(port) in p.cmdline() and 'serve' in p.cmdline(): return p.pid
        except psutil.Error: pass
    return None


def tree_cpu_s(pid:int|None) -> float|None:
    "CPU seconds (user + system) used so far by a process and its live descendants"
    try: import psutil
    except ImportError: return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.Error, ValueError, TypeError): return None  # gone, or no pid
    total = 0.0
    for p in procs:
        try: t = p.cpu_times(); total += t.user + t.system
        except psutil.Error: pass  # ended between the listing and now
    return total


# ---------------------------------------------------------------------------------------------------------------------
# The client

class RawClient:
    "A minimal HTTP/1.1 keep-alive client on asyncio streams (one connection): a request costs the client ~10x less CPU than httpx"
    def __init__(self, url:str):
        from urllib.parse import urlsplit
        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port, (u.path or '/').encode()
        self.reader = self.writer = None

    async def post(self, body:bytes) -> int:
        if self.writer is None: self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(b'POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s'
                              % (self.path, self.host.encode(), self.port, len(body), body))
            head = (await self.reader.readuntil(b'\r\n\r\n')).lower()
            status = int(head[9:12])
            if b'transfer-encoding: chunked' in head:
                while (n := int((await self.reader.readuntil(b'\r\n')).split(b';')[0], 16)): await self.reader.readexactly(n + 2)
                await self.reader.readuntil(b'\r\n')
            else:
                i = head.find(b'content-length:')
                await self.reader.readexactly(int(head[i + 15:head.index(b'\r\n', i)]) if i >= 0 else 0)
            if b'connection: close' in head: await self.close()
            return status
        except BaseException: await self.close(); raise

    async def close(self):
        if self.writer is not None:
            w, self.reader, self.writer = self.writer, None, None
            w.close()
            try: await w.wait_closed()
            except OSError: pass


@contextlib.asynccontextmanager
async def connections(kind:str, url:str, n:int):
    "`n` client connections to `url`, each an async callable body -> status code"
    if kind == 'raw':
        conns = [RawClient(url) for _ in range(n)]
        try: yield [c.post for c in conns]
        finally:
            for c in conns: await c.close()
    else:
        import httpx
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n), timeout=30.0) as client:
            async def post(body:bytes) -> int: return (await client.post(url, content=body, headers=HEADERS)).status_code
            yield [post] * n


async def load(url:str, bodies:list[bytes], clients:int, n:int, max_s:float, pid:int|None=None, kind:str='httpx') -> dict:
    "`n` POSTs (fewer if `max_s` runs out) from `clients` concurrent clients, one connection each; latencies of 200s"
    lat, codes, sent = [], collections.Counter(), 0
    async with connections(kind, url, clients) as posts:
        await asyncio.gather(*(p(bodies[0]) for p in posts))  # open the connections

        async def worker(post, deadline:float):
            nonlocal sent
            while sent < n and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]; sent += 1
                t = time.perf_counter()
                try: code = await asyncio.wait_for(post(body), 30.0)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError) as e: code = type(e).__name__
                except Exception as e:
                    if type(e).__module__.split('.')[0] not in ('httpx', 'httpcore'): raise
                    code = type(e).__name__
                dt = time.perf_counter() - t
                codes[code] += 1
                if code == 200: lat.append(dt * 1000)

        cpu0, srv0, t0 = time.process_time(), tree_cpu_s(pid), time.perf_counter()
        await asyncio.gather(*(worker(p, t0 + max_s) for p in posts))
        wall, cpu, srv1 = time.perf_counter() - t0, time.process_time() - cpu0, tree_cpu_s(pid)
    done = sum(codes.values())
    ok = codes.get(200, 0)
    return {'requests': done, 'ok': ok, 'errors': done - ok, 'codes': {str(k): v for k, v in codes.items()}, 'wall_s': wall,
            'req_s': ok / wall if wall else 0.0, 'p50': float(np.percentile(lat, 50)) if lat else None,
            'p99': float(np.percentile(lat, 99)) if lat else None, 'client_cpu_ms_per_req': 1000 * cpu / max(done, 1),
            'server_cpu_ms_per_req': 1000 * (srv1 - srv0) / max(done, 1) if srv0 is not None and srv1 is not None else None,
            'truncated_by_time': done < n}


def time_inprocess(b, x:np.ndarray, n:int, max_s:float) -> dict:
    "`Bundle.predict` on one digit at a time, as the server's model call would see it"
    lat, deadline = [], time.perf_counter() + max_s
    for i in range(n):
        if time.perf_counter() > deadline: break
        xi = x[i % len(x)][None]
        t = time.perf_counter_ns(); b.predict(xi); lat.append((time.perf_counter_ns() - t) / 1e6)
    return {'requests': len(lat), 'ok': len(lat), 'errors': 0, 'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99)),
            'req_s': None, 'truncated_by_time': len(lat) < n}


def check_answers(servers:dict, bodies:dict, expected:list[str]) -> dict:
    "Each model server's prediction for the first digits, against `Bundle.predict` in-process"
    import httpx
    out = {}
    for name, s in servers.items():
        if s['kind'] == 'bare': continue
        got = []
        for body in bodies[s['kind']][:len(expected)]:
            r = httpx.post(s['url'], content=body, headers=HEADERS, timeout=30)
            if r.status_code != 200: raise RuntimeError(f"{name} answered {r.status_code}: {r.text[:500]}")
            j = r.json()
            got.append(str(j['predictions'][0]['prediction'] if s['kind'] == 'mlflow' else j['prediction']))
        out[name] = sum(g == e for g, e in zip(got, expected)) / len(expected)
        if out[name] != 1.0: print(f"WARNING: {name} disagrees with Bundle.predict on {len(expected) - sum(g == e for g, e in zip(got, expected))} of {len(expected)} digits: {got} vs {expected}")
    return out


# ---------------------------------------------------------------------------------------------------------------------

def versions() -> dict:
    import importlib.metadata as md
    out = {'python': platform.python_version()}
    for p in ('mlflow', 'onnxruntime', 'fastapi', 'uvicorn', 'starlette', 'httpx', 'uvloop', 'httptools', 'numpy'):
        try: out[p] = md.version(p)
        except md.PackageNotFoundError: out[p] = None
    return out


def cpu_model() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def median_of(rounds:list[dict], key:str):
    v = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(v) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--requests', type=int, default=2000, help='requests per server, client count and round')
    ap.add_argument('--max-seconds', type=float, default=30.0, help='time bound of one setting (server, clients, round)')
    ap.add_argument('--rounds', type=int, default=3, help='A/B rounds (at least 2)')
    ap.add_argument('--clients', default='1,8', help='concurrent client counts, comma-separated')
    ap.add_argument('--warmup', type=int, default=200, help='requests per server and client count before the rounds')
    ap.add_argument('--bundle', help='an MNIST bundle folder to serve (default: train one, about 10-30 s)')
    ap.add_argument('--no-workers2', action='store_true', help='skip the `mlopsnb serve --workers 2` row')
    ap.add_argument('--client', choices=('httpx', 'raw'), default='httpx',
                    help='httpx.AsyncClient, or a minimal asyncio-streams HTTP/1.1 client that leaves more of the cores to the servers')
    ap.add_argument('--start-timeout', type=float, default=300.0, help='seconds a server may take to become ready')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'serve.json'))
    ap.add_argument('--_build', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._build: return build(Path(a._build), a.bundle)
    if a.rounds < 2: ap.error('--rounds must be at least 2 (A/B/A/B)')
    clients = sorted({int(c) for c in a.clients.split(',') if c.strip()})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no server left behind
    work = Path(tempfile.mkdtemp(prefix='bench-serve-'))
    res = {'machine': platform.platform(), 'cpu': cpu_model(), 'cpus': os.cpu_count(), 'load_before': os.getloadavg(),
           'versions': versions(), 'args': {k: v for k, v in vars(a).items() if not k.startswith('_')}}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in res['load_before'])} on {res['cpus']} CPUs ({res['cpu']})")
    print('versions: ' + ', '.join(f"{k} {v}" for k, v in res['versions'].items()), flush=True)
    try: run(a, clients, work, res)
    finally: shutil.rmtree(work, ignore_errors=True)


def run(a, clients:list[int], work:Path, res:dict) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db", PYTHONWARNINGS='ignore', MPLBACKEND='Agg',
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `mlflow models serve` execs `uvicorn` from PATH
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR='false')
    t0 = time.time()
    cmd = [sys.executable, __file__, '--_build', str(work)] + (['--bundle', str(Path(a.bundle).resolve())] if a.bundle else [])
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=900)
    if r.returncode != 0: raise RuntimeError(f"building/registering the bundle failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    built = json.loads((work / 'build.json').read_text())
    res['build'] = built
    how = 'given' if a.bundle else f"trained in {built['train_s']:.1f}s"
    print(f"bundle {how}, registered as models:/{NAME}/{built['version']} in {built['log_s']:.1f}s ({time.time() - t0:.1f}s in all)", flush=True)

    from mlopsnb.bundle import load_bundle
    d = np.load(work / 'digits.npz')
    x = d['x']
    b = load_bundle(built['bundle'], threads=os.cpu_count())  # the threads `mlopsnb serve` gives its one worker
    expected = [str(p) for p in b.predict(x[:16])]
    bodies = {'mlopsnb': [json.dumps({'array': xi.tolist()}).encode() for xi in x],
              'mlflow': [json.dumps({'inputs': xi[None].tolist()}).encode() for xi in x]}
    res['body_bytes'] = {k: int(np.mean([len(v) for v in vs])) for k, vs in bodies.items()}

    servers = {}
    try:
        with ExitStack() as stack: start_and_measure(a, clients, work, env, built, bodies, expected, b, x, stack, servers, res)
    finally: res['left_running'] = reap([s['pid'] for s in servers.values()])
    report(a, clients, servers, res)


def start_and_measure(a, clients, work, env, built, bodies, expected, b, x, stack, servers, res) -> None:
    "Start the servers (each stopped by `stack`), check their answers, warm up, run the rounds"
    from mlopsnb.serve import free_port
    port = free_port()
    pid, dt = stack.enter_context(process_server(
        [str(BIN / 'mlflow'), 'models', 'serve', '-m', f"models:/{NAME}/{built['version']}", '--env-manager', 'local',
         '--port', str(port), '--host', '127.0.0.1'], f"http://127.0.0.1:{port}/ping", 'mlflow models serve', env, work,
        work / 'mlflow-serve.log', a.start_timeout))
    servers['mlflow'] = {'kind': 'mlflow', 'url': f"http://127.0.0.1:{port}/invocations", 'pid': pid, 'startup_s': dt}
    print(f"mlflow models serve ready in {dt:.1f}s", flush=True)
    for name, opts in (('mlopsnb', {}), ('mlopsnb w2', {'workers': 2}))[:1 if a.no_workers2 else 2]:
        url, pid, dt = stack.enter_context(mlopsnb_server(f"models:/{NAME}@champion", env, work / f"requests-{name.replace(' ', '-')}",
                                                          a.start_timeout, **opts))
        servers[name] = {'kind': 'mlopsnb', 'url': f"{url}/predict", 'pid': pid, 'startup_s': dt}
        print(f"{name} serve ready in {dt:.1f}s", flush=True)
    import httpx
    answer = httpx.post(servers['mlopsnb']['url'], content=bodies['mlopsnb'][0], headers=HEADERS, timeout=30).content
    (work / 'answer.json').write_bytes(answer)
    port = free_port()
    pid, dt = stack.enter_context(process_server([sys.executable, '-c', BARE_SERVER, str(port), str(work / 'answer.json')],
                                                 f"http://127.0.0.1:{port}/ready", 'bare server', env, work, work / 'bare.log', 60))
    servers['bare'] = {'kind': 'bare', 'url': f"http://127.0.0.1:{port}/predict", 'pid': pid, 'startup_s': dt}
    res['answer_bytes'] = len(answer)
    res['startup_s'] = {k: s['startup_s'] for k, s in servers.items()}
    res['agreement_with_bundle_predict'] = check_answers(servers, bodies, expected)
    try: import uvloop; res['client'] = {'kind': a.client, 'loop': f"uvloop {uvloop.__version__}"}; runner = uvloop.run
    except ImportError: res['client'] = {'kind': a.client, 'loop': 'asyncio'}; runner = asyncio.run
    res['rounds'] = runner(measure(a, clients, servers, bodies, b, x))
    res['load_after'] = os.getloadavg()


def reap(pgids:list[int|None], timeout:float=20.0) -> list[int]:
    "Wait for the servers' process groups (each server leads its own session) to be gone, SIGKILL what remains; the pgids still there"
    def alive(g):
        try: os.killpg(g, 0); return True
        except ProcessLookupError: return False
        except PermissionError: return True
    pgids, t0 = [g for g in pgids if g], time.time()
    while any(alive(g) for g in pgids) and time.time() - t0 < timeout: time.sleep(0.1)
    for g in filter(alive, pgids):
        try: os.killpg(g, signal.SIGKILL)
        except ProcessLookupError: pass
    t0 = time.time()
    while any(alive(g) for g in pgids) and time.time() - t0 < 5: time.sleep(0.1)
    return [g for g in pgids if alive(g)]


async def measure(a, clients:list[int], servers:dict, bodies:dict, b, x:np.ndarray) -> dict:
    "Warm-up, then the A/B rounds: {clients: {server: [one result per round]}}"
    body = lambda s: bodies['mlflow' if s['kind'] == 'mlflow' else 'mlopsnb']
    names = list(servers)
    for c in clients:
        for name in names:
            s = servers[name]
            w = await load(s['url'], body(s), c, a.warmup, a.max_seconds, kind=a.client)
            if w['errors']: print(f"warm-up: {name} at {c} clients: {w['errors']} errors {w['codes']}")
    time_inprocess(b, x, a.warmup, a.max_seconds)
    print("warm-up done", flush=True)
    out = {c: {**{n: [] for n in names}, **({'in-process predict': []} if c == 1 else {})} for c in clients}
    for r in range(a.rounds):
        for c in clients:
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                s = servers[name]
                out[c][name].append(await load(s['url'], body(s), c, a.requests, a.max_seconds, s['pid'], a.client))
                if name == 'bare' and c == 1: out[c]['in-process predict'].append(time_inprocess(b, x, a.requests, a.max_seconds))
            print(f"round {r + 1}/{a.rounds}, {c} client{'s' * (c > 1)}: " +
                  ', '.join(f"{n} {out[c][n][-1]['req_s']:.0f} req/s" for n in names), flush=True)
    return out


def report(a, clients:list[int], servers:dict, res:dict) -> None:
    rounds = res['rounds']
    med = {c: {n: {k: median_of(v, k) for k in ('req_s', 'p50', 'p99', 'client_cpu_ms_per_req', 'server_cpu_ms_per_req')}
               | {'errors': sum(x['errors'] for x in v), 'requests': sum(x['requests'] for x in v),
                  'truncated_rounds': sum(x['truncated_by_time'] for x in v)}
               for n, v in rc.items()} for c, rc in rounds.items()}
    res['median'] = med
    ratios, goals = {}, {}
    hi = max(clients)
    if 'mlflow' in med[hi] and 'mlopsnb' in med[hi]:
        m, o = med[hi]['mlflow'], med[hi]['mlopsnb']
        ratios[f'{hi} clients: mlopsnb / mlflow req/s (goal >= 3)'] = o['req_s'] / m['req_s'] if m['req_s'] and o['req_s'] else None
        ratios[f'{hi} clients: mlopsnb / mlflow p99 (goal <= 1)'] = o['p99'] / m['p99'] if m['p99'] and o['p99'] else None
        if 'mlopsnb w2' in med[hi] and m['req_s'] and med[hi]['mlopsnb w2']['req_s']:
            ratios[f'{hi} clients: mlopsnb --workers 2 / mlflow req/s'] = med[hi]['mlopsnb w2']['req_s'] / m['req_s']
        if med[hi].get('bare', {}).get('req_s') and o['req_s']:
            ratios[f'{hi} clients: mlopsnb / bare round trip req/s (the client ceiling)'] = o['req_s'] / med[hi]['bare']['req_s']
        goals['throughput_3x'] = (ratios[f'{hi} clients: mlopsnb / mlflow req/s (goal >= 3)'] or 0) >= 3
        goals['p99_not_worse'] = (ratios[f'{hi} clients: mlopsnb / mlflow p99 (goal <= 1)'] or 9e9) <= 1
    if 1 in med:
        m1 = med[1]
        if m1['mlflow']['req_s'] and m1['mlopsnb']['req_s']: ratios['1 client: mlopsnb / mlflow req/s'] = m1['mlopsnb']['req_s'] / m1['mlflow']['req_s']
        floor = m1['in-process predict']['p50'] + m1['bare']['p50'] if m1['bare']['p50'] else None
        res['floor_p50_ms'] = floor
        if floor and m1['mlopsnb']['p50']:
            ratios['1 client: mlopsnb p50 / (in-process predict p50 + bare round trip p50) (goal <= 1.2)'] = m1['mlopsnb']['p50'] / floor
            goals['p50_within_1.2x_of_floor'] = m1['mlopsnb']['p50'] / floor <= 1.2
    res['ratios'], res['goals'] = ratios, goals

    f = lambda v, p=2: '-' if v is None else f"{v:.{p}f}"
    lb, la = res['load_before'], res['load_after']
    print(f"\n== serving an MNIST CNN on loopback: mlflow models serve vs mlopsnb serve ({res['cpus']} CPUs, {res['cpu']})")
    print(f"load average (1/5/15 min) at start {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, at end {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}")
    print('versions: ' + ', '.join(f"{k} {v}" for k, v in res['versions'].items() if k in ('mlflow', 'onnxruntime', 'fastapi', 'uvicorn', 'httpx')))
    print(f"client: {res['client']['kind']} on {res['client']['loop']}, in one process; "
          f"{a.rounds} rounds x {a.requests} requests (bound {a.max_seconds:g} s) per server and client count; medians over rounds; "
          f"bodies {res['body_bytes']} B, answer {res['answer_bytes']} B")
    print('start-up to ready: ' + ', '.join(f"{k} {v:.1f}s" for k, v in res['startup_s'].items()))
    print(f"\n{'server':<20} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'srv CPU ms/req':>14} {'client CPU ms/req':>17}")
    for c in clients:
        for n, v in med[c].items():
            trunc = f"  ({v['truncated_rounds']} rounds cut by --max-seconds)" if v['truncated_rounds'] else ''
            print(f"{n:<20} {c:>7} {f(v['req_s'], 0):>8} {f(v['p50'], 3):>8} {f(v['p99'], 3):>8} {v['errors']:>7} "
                  f"{f(v['server_cpu_ms_per_req'], 3):>14} {f(v['client_cpu_ms_per_req'], 3):>17}{trunc}")
    if res.get('floor_p50_ms'): print(f"\n1-client floor: in-process predict p50 + bare round trip p50 = {res['floor_p50_ms']:.3f} ms")
    print('\nratios')
    for k, v in ratios.items(): print(f"  {k:88s} {f(v, 3):>7}")
    bare_hi = med[hi].get('bare', {}).get('req_s')
    best = max((v['req_s'] or 0 for n, v in med[hi].items() if n != 'bare'), default=0)
    if bare_hi and best > 0.5 * bare_hi:
        print(f"  note: at {hi} clients a model server reached {best / bare_hi:.0%} of the bare round trip's {bare_hi:.0f} req/s: "
              f"the {a.client} client may be the ceiling{'; try --client raw' if a.client == 'httpx' else ''}")
    print('goals met: ' + ', '.join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
    print(f"predictions agree with Bundle.predict: {res['agreement_with_bundle_predict']}; servers left running: {res['left_running'] or 'none'}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(a.out, json.dumps(res, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == '__main__':
    main()
