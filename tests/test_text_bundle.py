"""Text bundles end to end, as a user meets them: a tiny BERT briefly trained on real rotten_tomatoes reviews and
exported with `export_bundle` (tests/_text_bundle.py, once per session), then predicted from raw strings where neither
torch nor transformers can be imported, through the real `mlopsnb predict` / `mlopsnb explain` commands, through a
real `mlopsnb serve` on loopback (JSON, text/plain, .txt uploads, bad requests, /explain), on the served page in
headless Chromium, and monitored by the real `mlopsnb monitor` from the server's own request log: reviews the model
never saw are not drift; reviews full of emoji, or six reviews run together, are."""
import concurrent.futures as cf, json, math, shutil, subprocess, sys, textwrap, time, urllib.error, urllib.request
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle
from mlopsnb.request_log import read_request_log
from mlopsnb.serve import serving
from _isolation import blocked_imports_prelude
from _text_bundle import real_text_bundle

ROOT = Path(__file__).resolve().parents[1]
REVIEW = 'a gorgeous, moving film'


@pytest.fixture(scope='session')
def text(tmp_path_factory):
    "The real text bundle and texts it never saw: {'path', 'train_texts', 'valid_texts', 'unseen_texts', 'unseen_labels'}"
    return real_text_bundle(tmp_path_factory.mktemp('text_bundle'))


@pytest.fixture(scope='module')
def server(text, tmp_path_factory):
    "`mlopsnb serve` on the text bundle, with its request log in a folder of its own: (base URL, log folder)"
    log = tmp_path_factory.mktemp('text_log')
    with serving(text['path'], log=log) as url: yield url, log


def _cli(*args, cwd=None, timeout=120):
    "The real `mlopsnb` command in a fresh process"
    return subprocess.run([sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())', *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _req(url, data=None, headers=None, timeout=60):
    "(status, parsed JSON) of one HTTP request; 4xx/5xx are returned, not raised"
    r = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp: status, body = resp.status, resp.read()
    except urllib.error.HTTPError as e: status, body = e.code, e.read()
    return status, json.loads(body)


def _post(url, obj):
    return _req(url, json.dumps(obj).encode(), {'content-type': 'application/json'})


def _logged(log: Path, n: int, timeout: float = 15) -> list[dict]:
    "The log's prediction records once it holds at least `n` (the server flushes its log every second)"
    t0 = time.time()
    while True:
        recs = [r for r in read_request_log(log) if r.get('type') is None]
        if len(recs) >= n or time.time() - t0 > timeout: return recs
        time.sleep(0.2)


def _strict(s: str):
    "JSON as a browser or jq reads it: NaN and Infinity are errors"
    return json.loads(s, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"not strict JSON: {c}")))


def test_bundle_predicts_raw_strings_without_torch_or_transformers(text):
    "A fresh process where torch, fastai, transformers and MLflow cannot be imported: predict, predict_rows and verify on raw strings"
    b = load_bundle(text['path'])
    texts = [REVIEW, 'a dull, lifeless mess', text['unseen_texts'][0]]
    script = blocked_imports_prelude(('torch', 'fastai', 'transformers', 'mlflow')) + textwrap.dedent(f"""
        import json, sys
        from mlopsnb.bundle import load_bundle
        b = load_bundle({str(text['path'])!r})
        rows = b.predict_rows({texts!r})
        print(json.dumps({{'pred': b.predict({texts!r}).tolist(), 'proba': b.predict_proba({texts!r}).tolist(),
                          'rows': rows, 'verify': b.verify()['ok'], 'int8': load_bundle({str(text['path'])!r}, 'int8').predict({texts!r}).tolist(),
                          'loaded': sorted(m for m in ('torch', 'transformers', 'fastai') if m in sys.modules)}}))
    """)
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got['loaded'] == [] and got['verify'] is True
    assert got['pred'] == b.predict(texts).tolist() and set(got['pred']) <= {'rotten', 'fresh'}
    np.testing.assert_allclose(got['proba'], b.predict_proba(texts), atol=1e-6)
    assert [r['prediction'] for r in got['rows']] == got['pred'] and all(r['warnings'] == [] for r in got['rows'])
    assert len(got['int8']) == 3


def test_predict_command_text_and_txt_file(text, tmp_path):
    "`mlopsnb predict BUNDLE --text ... --json` and a .txt file (one review per line) give what load_bundle gives"
    b = load_bundle(text['path'])
    r = _cli('predict', text['path'], '--text', REVIEW, '--json')
    assert r.returncode == 0, r.stderr
    (p,) = _strict(r.stdout)['predictions']
    want = b.predict_rows([REVIEW])[0]
    assert (p['input'], p['prediction']) == (REVIEW, want['prediction']) and math.isclose(p['probability'], want['probability'], abs_tol=1e-6)
    reviews = text['unseen_texts'][:3]
    (tmp_path / 'reviews.txt').write_text('\n'.join([reviews[0], '', reviews[1], reviews[2]]) + '\n', encoding='utf-8')
    r = _cli('predict', text['path'], tmp_path / 'reviews.txt')
    assert r.returncode == 0, r.stderr
    lines = [l.split('\t') for l in r.stdout.splitlines()]
    assert [l[0] for l in lines] == [f"{tmp_path / 'reviews.txt'}[{i}]" for i in range(3)]
    assert [l[1] for l in lines] == b.predict(reviews).tolist()


def test_wrong_input_kinds_are_exit_2_and_named(text, tmp_path):
    "A CSV to a text bundle, and `mlopsnb explain` on one: exit 2 with a message that says what the bundle takes"
    (tmp_path / 'rows.csv').write_text('text,label\ngreat,fresh\n')
    r = _cli('predict', text['path'], tmp_path / 'rows.csv', '--json')
    assert r.returncode == 2, r.stdout + r.stderr
    msg = _strict(r.stdout)['error']
    assert 'rows.csv' in msg and 'a CSV of table rows' in msg and 'for texts of up to 64 tokens' in msg, msg
    (tmp_path / 'r.txt').write_text(REVIEW)
    r = _cli('explain', text['path'], tmp_path / 'r.txt', '--out', tmp_path / 'out')
    assert r.returncode == 2 and 'explanations are not available for text bundles' in r.stderr, r.stderr
    r = _cli('predict', text['path'], '--text', REVIEW, '--verify')
    assert r.returncode == 0 and r.stdout.startswith('verify: ok'), r.stdout + r.stderr


def test_server_predicts_texts_and_logs_their_features(text, server, tmp_path):
    "/predict with one text, a list, a text/plain body and a .txt upload; concurrent texts of every length; the request log"
    url, log = server
    b = load_bundle(text['path'])
    status, j = _post(f"{url}/predict", {'text': REVIEW})
    assert status == 200 and j['prediction'] == b.predict([REVIEW])[0] and math.isclose(j['probability'], b.predict_proba([REVIEW]).max(), abs_tol=1e-5)
    texts = text['unseen_texts'][:5]
    status, j = _post(f"{url}/predict", {'texts': texts})
    assert status == 200 and [p['prediction'] for p in j['predictions']] == b.predict(texts).tolist()
    assert [p['input'] for p in j['predictions']] == [f'texts[{i}]' for i in range(5)]
    status, j = _req(f"{url}/predict", REVIEW.encode(), {'content-type': 'text/plain; charset=utf-8'})
    assert status == 200 and j['prediction'] == b.predict([REVIEW])[0]
    boundary = 'mlopsnbtext'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.txt"\r\nContent-Type: text/plain\r\n\r\n'
            f'{texts[0]}\n{texts[1]}\n\r\n--{boundary}--\r\n').encode()
    status, j = _req(f"{url}/predict", body, {'content-type': f'multipart/form-data; boundary={boundary}'})
    assert status == 200 and [p['input'] for p in j['predictions']] == ['file r.txt line 1', 'file r.txt line 2'], j
    # 24 requests at once, texts from 1 to 60 words: merged into shared batches, each answer what the bundle gives alone
    many = [' '.join(text['unseen_texts'][i].split()[:1 + (i * 7) % 60]) for i in range(24)]
    with cf.ThreadPoolExecutor(12) as ex: answers = list(ex.map(lambda t: _post(f"{url}/predict", {'text': t}), many))
    assert all(s == 200 for s, _ in answers), [a for a in answers if a[0] != 200][:2]
    np.testing.assert_allclose([a['probabilities']['fresh'] for _, a in answers], b.predict_proba(many)[:, 1], atol=1e-5)
    recs = _logged(log, 1 + 5 + 1 + 2 + 24)
    first = next(r for r in recs if r['request_id'] == recs[0]['request_id'])
    assert {'characters', 'tokens', 'unknown_rate'} <= set(first['input']) and first['input']['characters'] == len(REVIEW)
    assert sum(k.startswith('embedding_') for k in first['input']) == 8, first['input']   # the sentence embedding's coordinates
    info = _req(f"{url}/info")[1]
    assert info['input']['kind'] == 'text' and [o['title'] for o in info['request_schema']['oneOf']] == ['Text', 'Texts']
    content = _req(f"{url}/openapi.json")[1]['paths']['/predict']['post']['requestBody']['content']
    assert {'application/json', 'text/plain', 'multipart/form-data'} <= set(content)


@pytest.mark.parametrize('body,status,field,words', [
    ({'text': 42}, 422, 'text', 'expected a string, got a number (42)'),
    ({'text': None}, 422, 'text', 'expected a string, got null'),
    ({'texts': [REVIEW, ['a list']]}, 422, 'texts', 'texts[1]: expected a string, got a list'),
    ({'texts': REVIEW}, 422, 'texts', 'expected a list of strings'),
    ({'texts': []}, 422, 'texts', 'no text given'),
    ({'text': '   '}, 422, 'text', 'empty text'),
    ({'text': 'x' * 20_001}, 413, 'text', 'this server takes at most 20,000 per text'),
    ({'texts': ['ok'] * 1025}, 413, 'texts', '1025 texts in one request'),
    ({'rows': [{'text': 'x'}]}, 422, None, "expected one of the fields ['text', 'texts']"),
    ([REVIEW], 422, None, 'expected a JSON object with the field text or texts'),
])
def test_server_refuses_bad_text_requests_with_4xx(server, body, status, field, words):
    url, _ = server
    got, j = _post(f"{url}/predict", body)
    assert (got, j['field']) == (status, field) and words in j['detail'], j


def test_server_refuses_other_bodies_and_explain(server):
    "A lone surrogate, non-UTF-8 text, a CSV body: 4xx; /explain on a text bundle: a 422 that says why"
    url, _ = server
    assert _req(f"{url}/predict", b'{"text": "bad \\ud800 surrogate"}', {'content-type': 'application/json'})[0] == 422
    assert _req(f"{url}/predict", b'\xff\xfe', {'content-type': 'text/plain'})[0] == 422
    assert _req(f"{url}/predict", b'text\ngreat\n', {'content-type': 'text/csv'})[0] == 415
    status, j = _post(f"{url}/explain", {'text': REVIEW})
    assert status == 422 and 'explanations are not available for text bundles' in j['detail'], j


def _monitor(text, log, *extra):
    r = _cli('monitor', text['path'], '--log', log, '--window', 200, '--json', '--no-track', '--fail-on', 'drift', *extra)
    assert r.returncode in (0, 3), r.stdout[-2000:] + r.stderr
    return r.returncode, _strict(r.stdout)


def test_monitor_flags_drifted_reviews_not_unseen_ones(text, server, tmp_path):
    """The server's own log, through the real `mlopsnb monitor`: 200 reviews the model never saw are not drift; then 200
    reviews sprinkled with emoji (tokens the vocabulary does not know) are, and six reviews run together (a .txt file) are too"""
    url, log = server
    unseen = text['unseen_texts']
    n0 = len(_logged(log, 0))
    assert _post(f"{url}/predict", {'texts': unseen[:200]})[0] == 200
    _logged(log, n0 + 200)
    rc, res = _monitor(text, log)
    assert rc == 0 and res['verdict'] != 'drift', res['reasons']
    emoji = [' '.join(w + (' 🔥🤖😂' if k % 2 else '') for k, w in enumerate(t.split())) for t in unseen[200:400]]
    assert _post(f"{url}/predict", {'texts': emoji})[0] == 200
    _logged(log, n0 + 400)
    rc, res = _monitor(text, log)
    assert rc == 3 and res['verdict'] == 'drift' and res['drifted'][0] == 'unknown_rate', res['reasons']
    assert next(f for f in res['features'] if f['feature'] == 'unknown_rate')['effect'] is None   # σ = 0 in training: infinite, null in JSON
    (tmp_path / 'long.txt').write_text('\n'.join(' '.join(unseen[k:k + 6]) for k in range(0, 1200, 6)), encoding='utf-8')
    r = _cli('monitor', text['path'], '--data', tmp_path / 'long.txt', '--json', '--no-track', '--fail-on', 'drift')
    res = _strict(r.stdout)
    assert r.returncode == 3 and {'characters', 'tokens'} <= set(res['drifted'][:2]), res['reasons']


# ---- the page in a real browser (as tests/test_serve_page.py) ----
CHROMIUM = '/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else shutil.which('chromium')


def test_page_types_a_review_and_shows_the_sentiment(text, server, tmp_path):
    "Headless Chromium on `/`: a text area, Predict, the class load_bundle gives with its probability and bars; an empty text is refused"
    if not CHROMIUM: pytest.skip("no Chromium: apt-get install chromium (Debian's; .ci/run installs it)")
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.skip("no playwright: pip install -e '.[dev]'")
    url, _ = server
    b = load_bundle(text['path'])
    with sync_playwright() as p:
        br = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--no-first-run'])
        try:
            pg = br.new_page(viewport={'width': 1200, 'height': 760})
            errors, calls = [], []
            pg.on('pageerror', lambda e: errors.append(str(e)))
            pg.on('request', lambda r: calls.append(r.url.rsplit('/', 1)[-1]))
            pg.set_default_timeout(20_000)
            pg.goto(url + '/')
            pg.wait_for_selector('#text')
            assert 'text' in pg.text_content('#model') and pg.get_attribute('#text', 'placeholder').startswith('Type a review')
            pg.click('#predict')                                     # nothing typed: refused in the page, the text area marked
            assert 'Type a text first' in pg.text_content('#error') and 'invalid' in pg.get_attribute('#text', 'class')
            pg.fill('#text', REVIEW)
            assert pg.text_content('#text-hint').startswith(f'{len(REVIEW)} characters')
            pg.evaluate("document.getElementById('result').dataset.state = ''")
            pg.click('#predict')
            pg.wait_for_selector('#result[data-state=done], #result[data-state=error]')
            want = b.predict_rows([REVIEW])[0]
            assert pg.text_content('#prediction') == want['prediction'], pg.text_content('#error')
            assert pg.text_content('#probability') == f"{100 * want['probability']:.1f} % probability"
            assert pg.locator('#bars .label').all_text_contents() == sorted(want['probabilities'], key=want['probabilities'].get, reverse=True)
            assert pg.is_hidden('#why') and 'explain' not in calls and errors == [], (calls, errors)
            shot = tmp_path / 'text_page.png'
            pg.screenshot(path=str(shot), full_page=True)
        finally: br.close()
    keep = ROOT / '_proc' / 'screenshots'   # git-ignored copy for a person to look at
    keep.mkdir(parents=True, exist_ok=True); shutil.copy(shot, keep / shot.name)
    assert shot.stat().st_size > 20_000
