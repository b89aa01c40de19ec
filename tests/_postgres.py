"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, run as the `postgres` user (initdb refuses
root, and CI runs as root) in a temp folder owned by that user, on a free loopback port, trust auth; removed afterwards."""
from __future__ import annotations
import contextlib, glob, os, shutil, socket, subprocess, tempfile
from pathlib import Path


def pg_bin() -> Path|None:
    "The newest /usr/lib/postgresql/*/bin holding initdb, postgres and pg_ctl (None when the package is missing)"
    dirs = sorted(glob.glob('/usr/lib/postgresql/*/bin'), key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if all((Path(d) / b).exists() for b in ('initdb', 'postgres', 'pg_ctl')): return Path(d)
    return None


def missing_reason() -> str|None:
    "Why no server can be started here, or None"
    if pg_bin() is None: return "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql; .ci/run does)"
    if os.geteuid() == 0:
        if shutil.which('runuser') is None: return "running as root without runuser: cannot start PostgreSQL as the postgres user"
        try: import pwd; pwd.getpwnam('postgres')
        except KeyError: return "running as root and there is no postgres user to run initdb as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _as_postgres(cmd:list[str]) -> list[str]:
    "The command, as the postgres user when this process is root"
    return ['runuser', '-u', 'postgres', '--', *cmd] if os.geteuid() == 0 else cmd


def _run(cmd:list[str], what:str, **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0: raise RuntimeError(f"{what} failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


@contextlib.contextmanager
def postgres_server(db:str='mlopsnb'):
    "Start a server, create database `db`, yield its URL `postgresql://postgres@127.0.0.1:PORT/db`; stop and remove it after"
    bin_ = pg_bin()
    root = Path(tempfile.mkdtemp(prefix='mlopsnb-pg-', dir='/tmp'))  # not under pytest's tmp_path: that is 0700 root's
    data, sock, log = root / 'data', root / 'sock', root / 'server.log'
    sock.mkdir()
    if os.geteuid() == 0: shutil.chown(root, 'postgres', 'postgres'); shutil.chown(sock, 'postgres', 'postgres')
    port, started = free_port(), False
    try:
        _run(_as_postgres([str(bin_ / 'initdb'), '-D', str(data), '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']), 'initdb')
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run(_as_postgres([str(bin_ / 'pg_ctl'), '-D', str(data), '-l', str(log), '-w', '-t', '30', '-o', opts, 'start']), 'pg_ctl start')
        started = True
        _run([str(bin_ / 'createdb'), '-h', '127.0.0.1', '-p', str(port), '-U', 'postgres', db], 'createdb')
        yield f"postgresql://postgres@127.0.0.1:{port}/{db}"
    finally:
        if started:
            subprocess.run(_as_postgres([str(bin_ / 'pg_ctl'), '-D', str(data), '-m', 'fast', '-w', 'stop']), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
