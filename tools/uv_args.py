"""Print the `uv pip install` options that say what this machine's pip configuration says (pip.conf files and PIP_*
variables: index URLs, find-links, constraints), so `make install` resolves the same packages with uv as with pip.
uv reads none of pip's configuration by itself. Exits 1 when pip's configuration cannot be read (then use pip)."""
import shlex, subprocess, sys

OPTIONS = {'index-url': '--index-url', 'extra-index-url': '--extra-index-url', 'find-links': '--find-links',
           'constraint': '--constraint', 'no-index': '--no-index'}

def pip_config(pip:str) -> dict[str, str]:
    "pip's effective settings (files, then environment), as `pip config list` prints them: {option: value}"
    out = subprocess.run([pip, 'config', 'list'], capture_output=True, text=True, check=True).stdout
    sections = {'global': {}, 'install': {}, ':env:': {}}  # pip's precedence: the environment over [install] over [global]
    for line in out.splitlines():  # e.g. "global.find-links='/opt/wheels'" or ":env:.find-links='/opt/wheels'"
        key, _, value = line.partition('=')
        section, _, option = key.rpartition('.')
        if section in sections: sections[section][option] = shlex.split(value)[0] if value else ''
    return {**sections['global'], **sections['install'], **sections[':env:']}

def uv_args(conf:dict[str, str]) -> list[str]:
    args = ['--index-strategy', 'unsafe-best-match']  # pip's rule: the best version from any index
    for option, flag in OPTIONS.items():
        if option not in conf: continue
        if option == 'no-index':
            if conf[option].lower() in ('1', 'true', 'yes', 'on'): args.append(flag)
            continue
        for v in conf[option].split(): args += [flag, v]
    return args

if __name__ == '__main__':
    try: print(shlex.join(uv_args(pip_config(sys.argv[1] if len(sys.argv) > 1 else 'pip'))))
    except (OSError, subprocess.CalledProcessError) as e: sys.exit(f"cannot read pip's configuration: {e}")
