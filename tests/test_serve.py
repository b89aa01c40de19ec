"""`mlopsnb serve` end to end, as a user runs it: the real command in a subprocess on loopback, real bundles exported
from briefly trained fastai Learners (the `bundles` fixture), a real MLflow store for registry URIs."""
import concurrent.futures as cf, io, json, os, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle
from mlopsnb.request_log import read_request_log
from mlopsnb.serve import serving

TOKEN = 'test-admin-token-123'


def _req(url, data=None, headers=None, method=None, timeout=30):
    "(status, parsed JSON or text, headers) of one HTTP request; 4xx/5xx are returned, not raised"
    r = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp: status, body, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e: status, body, hdrs = e.code, e.read(), e.headers
    try: return status, json.loads(body), hdrs
    except ValueError: return status, body.decode('utf-8', 'replace'), hdrs


def _post_json(url, obj, **kw):
    return _req(url, json.dumps(obj).encode(), {'content-type': 'application/json', **kw.pop('headers', {})}, **kw)


def _multipart(name, data, ctype='image/png'):
    boundary = 'mlopsnbtestboundary'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n').encode() + data + f'\r\n--{boundary}--\r\n'.encode()
    return body, {'content-type': f'multipart/form-data; boundary={boundary}'}


def _png(a):
    from PIL import Image
    buf = io.BytesIO(); Image.fromarray(a).save(buf, 'PNG'); return buf.getvalue()


def test_serves_a_real_digit_png_with_metrics_log_and_no_torch(bundles, tmp_path):
    "The MNIST bundle: /ready, /predict on a real digit PNG (the class fastai gives), /metrics counting it, the request log"
    log = tmp_path / 'log'
    with serving(bundles['img'], log=log) as url:
        assert _req(f"{url}/health")[0] == 200 and _req(f"{url}/ready")[1]['ready'] is True
        for i in range(3):
            status, body, hdrs = _req(f"{url}/predict", *_multipart(f'digit{i}.png', _png(bundles['x_val'][i])))
            assert status == 200, body
            assert body['prediction'] == bundles['img_pred'][i], (body, bundles['img_pred'][:3])
            assert set(body['model']) == {'name', 'version', 'run_id', 'role'} and hdrs['x-model-version'] == body['model']['version']
        metrics = _req(f"{url}/metrics")[1]
        assert 'mlopsnb_requests_total{endpoint="/predict",status="200"} 3.0' in metrics, metrics
        assert 'mlopsnb_batch_size_count' in metrics and 'mlopsnb_model_info{' in metrics
        pid = int(subprocess.run(['pgrep', '-f', f"serve {bundles['img']}"], capture_output=True, text=True).stdout.split()[0])
        maps = Path(f'/proc/{pid}/maps').read_text()
        assert 'libtorch' not in maps and '/torch/' not in maps, 'the server process loaded torch'
        info = _req(f"{url}/info")[1]
        assert info['task'] == 'classification' and info['input']['kind'] == 'image'
        schema = _req(f"{url}/openapi.json")[1]['paths']['/predict']['post']['requestBody']['content']
        assert {'application/json', 'multipart/form-data', 'image/png'} <= set(schema)
    time.sleep(0.2)
    recs = list(read_request_log(log))
    assert len(recs) == 3 and {'mean_intensity', 'std_intensity', 'width', 'height'} <= set(recs[0]['input']), recs[:1]
    assert [r['prediction'] for r in recs] == bundles['img_pred'][:3].tolist()


def test_tabular_bundle_missing_column_unseen_category_missing_value(bundles, tmp_path):
    "Penguins: a missing column is a 422 naming it; an unseen island and a missing value are answered as the bundle says"
    b = load_bundle(bundles['tab'])
    row = bundles['raw'].dropna().iloc[0].to_dict()
    with serving(bundles['tab'], log=tmp_path / 'log') as url:
        status, body, _ = _post_json(f"{url}/predict", {k: v for k, v in row.items() if k != 'bill_depth_mm'})
        assert status == 422 and body['field'] == 'bill_depth_mm' and "missing columns ['bill_depth_mm']" in body['detail'], body
        status, body, _ = _post_json(f"{url}/predict", {**row, 'island': 'Atlantis'})
        assert status == 200 and body['warnings'] == ["column 'island': 'Atlantis' never seen in training; predicted as '#na#'"], body
        assert body['prediction'] == b.predict_rows([{**row, 'island': 'Atlantis'}])[0]['prediction']
        status, body, _ = _post_json(f"{url}/predict", {**row, 'sex': None, 'body_mass_g': None})
        expected = b.predict_rows([{**row, 'sex': None, 'body_mass_g': None}])[0]
        assert status == expected.get('error') and 422 or 200, body
        assert body.get('prediction') == expected.get('prediction'), (body, expected)
        status, body, _ = _post_json(f"{url}/predict", {'rows': [row, {**row, 'bill_length_mm': 'long'}]})
        assert status == 200 and 'error' not in body['predictions'][0] and "'long' is not a number" in body['predictions'][1]['error'], body


def test_explain_answers_images_and_rows_and_refuses_bad_requests_with_4xx(bundles, tmp_path):
    "POST /explain: an occlusion map and overlay for a digit (what Bundle.explain gives), KernelSHAP values for a penguin; bad bodies are 4xx"
    import base64
    from PIL import Image
    b, tb = load_bundle(bundles['img']), load_bundle(bundles['tab'])
    with serving(bundles['img'], log=tmp_path / 'log') as url:
        status, body, hdrs = _req(f"{url}/explain", *_multipart('digit.png', _png(bundles['x_val'][0])))
        assert status == 200 and body['method'] == 'occlusion' and body['input'] == 'file digit.png', body
        want = b.explain(bundles['x_val'][:1])[0]
        assert body['prediction'] == want['prediction'] == bundles['img_pred'][0] and body['target'] == want['target']
        assert np.abs(np.array(body['attribution']) - want['attribution_model']).max() < 1e-5 * max(1, np.abs(want['attribution_model']).max())
        assert Image.open(io.BytesIO(base64.b64decode(body['overlay_png']))).size == (224, 224) and hdrs['x-model-version'] == body['model']['version']
        status, body, _ = _post_json(f"{url}/explain", {'images': [base64.b64encode(_png(x)).decode() for x in bundles['x_val'][:3]]})
        assert status == 200 and [e['prediction'] for e in body['explanations']] == bundles['img_pred'][:3].tolist()
        assert _req(f"{url}/explain", b'{"image": ', {'content-type': 'application/json'}, 'POST')[0] == 400          # malformed JSON
        status, body, _ = _req(f"{url}/explain", *_multipart('notes.png', b'not an image'))
        assert status == 422 and 'notes.png' in body['detail'], body
        assert _post_json(f"{url}/explain", {'array': np.repeat(bundles['x_val'][:1], 17, 0).tolist()})[0] == 413  # too many for one request
        assert _req(f"{url}/explain", b'x', {'content-type': 'text/plain'}, 'POST')[0] == 415
        assert 'mlopsnb_requests_total{endpoint="/explain",status="200"} 2.0' in _req(f"{url}/metrics")[1]
        pid = int(subprocess.run(['pgrep', '-f', f"serve {bundles['img']}"], capture_output=True, text=True).stdout.split()[0])
        assert '/torch/' not in Path(f'/proc/{pid}/maps').read_text(), 'explaining loaded torch in the server'
    row = bundles['raw'].dropna().iloc[0].to_dict()
    with serving(bundles['tab'], log=tmp_path / 'tlog') as url:
        status, body, _ = _post_json(f"{url}/explain", row)
        want = tb.explain([row])[0]
        assert status == 200 and body['method'] == 'kernel_shap' and list(body['values']) == tb.spec['input']['columns'], body
        assert max(abs(body['values'][c] - want['values'][c]) for c in want['values']) < 1e-9 and abs(body['delta']) < 1e-6
        status, body, _ = _post_json(f"{url}/explain", {k: v for k, v in row.items() if k != 'island'})
        assert status == 422 and body['field'] == 'island' and "missing columns ['island']" in body['detail'], body
        status, body, _ = _post_json(f"{url}/explain", {'rows': [row, {**row, 'bill_length_mm': 'long'}]})
        assert status == 200 and 'values' in body['explanations'][0] and "'long' is not a number" in body['explanations'][1]['error'], body
        assert _post_json(f"{url}/explain", [1, 2])[0] == 422


def test_admin_token_and_reload_under_load_loses_no_request(bundles, tmp_path):
    "No token: 401; wrong: 403; right: the models swap while 8 clients send requests, and every request is answered 200"
    # a generous deadline: this test is about the swap, and 8 client threads on 2 cores would otherwise meet 503s by design
    with serving(bundles['img'], log=tmp_path / 'log', workers=2, max_latency_ms=2000, env={'MLOPSNB_ADMIN_TOKEN': TOKEN}) as url:
        assert _req(f"{url}/admin/reload", b'', method='POST')[0] == 401
        assert _req(f"{url}/admin/reload", b'', {'authorization': 'Bearer wrong'}, 'POST')[0] == 403
        body_h = _multipart('d.png', _png(bundles['x_val'][0]))
        stop, statuses = time.time() + 4, []
        def client():
            out = []
            while time.time() < stop: out.append(_req(f"{url}/predict", *body_h)[0])
            return out
        with cf.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(client) for _ in range(8)]
            time.sleep(1)
            status, body, _ = _req(f"{url}/admin/reload", b'', {'authorization': f'Bearer {TOKEN}'}, 'POST')
            assert status == 200 and body['reloaded'] is True, body
            for f in futs: statuses += f.result()
        assert len(statuses) > 50 and set(statuses) == {200}, (len(statuses), sorted(set(statuses)))
    assert TOKEN not in ''.join(p.read_text() for p in (tmp_path / 'log').glob('*.jsonl'))


def test_shadow_logs_both_versions_for_the_same_requests(bundles, tmp_path):
    "--shadow: the answer comes from the champion; the log holds both models' predictions under each request id"
    other = tmp_path / 'other'
    import shutil
    shutil.copytree(bundles['img'], other)
    spec = json.loads((other / 'bundle.json').read_text()); spec['model']['sha256'] = 'f' * 64  # a second version of the same model
    (other / 'bundle.json').write_text(json.dumps(spec))
    with serving(bundles['img'], log=tmp_path / 'log', shadow=other) as url:
        ids = [_req(f"{url}/predict", *_multipart('d.png', _png(bundles['x_val'][i])))[1]['request_id'] for i in range(4)]
        time.sleep(0.3)
    recs = list(read_request_log(tmp_path / 'log'))
    by = {(r['request_id'], r['role']): r for r in recs}
    assert all((i, 'champion') in by and (i, 'shadow') in by for i in ids), recs
    assert {by[(i, 'shadow')]['version'] for i in ids} == {'f' * 12} != {by[(i, 'champion')]['version'] for i in ids}


def test_bad_command_lines_exit_2_before_binding(tmp_path):
    "Not a bundle, a split without a challenger: exit 2 with the reason, no server started"
    cli = [sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())', 'serve']
    r = subprocess.run(cli + [str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'not a model bundle folder' in r.stderr, r.stderr
    r = subprocess.run(cli + [str(tmp_path), '--split', '0.2'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and '--split needs --challenger' in r.stderr, r.stderr


def test_split_sends_a_share_to_the_challenger_and_keeps_versions_apart(bundles, tmp_path):
    "--challenger URI --split 0.5: both models answer, the log and /metrics tell their versions apart"
    import shutil
    other = shutil.copytree(bundles['img'], tmp_path / 'challenger')
    spec = json.loads((other / 'bundle.json').read_text()); spec['model']['sha256'] = 'c' * 64
    (other / 'bundle.json').write_text(json.dumps(spec))
    with serving(bundles['img'], log=tmp_path / 'log', challenger=other, split=0.5) as url:
        roles = [_req(f"{url}/predict", *_multipart('d.png', _png(bundles['x_val'][i % 8])))[1]['model']['role'] for i in range(40)]
        metrics = _req(f"{url}/metrics")[1]
    assert 5 < roles.count('challenger') < 35, roles
    assert f'mlopsnb_predictions_total{{role="challenger",version="{"c" * 12}"}} {roles.count("challenger")}.0' in metrics, metrics
    time.sleep(0.2)
    assert {(r['role'], r['version']) for r in read_request_log(tmp_path / 'log')} >= {('challenger', 'c' * 12)}


def test_registered_alias_moves_and_reload_serves_the_new_version(bundles, tmp_path):
    "models:/mnist@champion through a real MLflow store: version 1 served; the alias moves to version 2; /admin/reload serves it"
    env = {'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path / 'mlflow.db'}", 'MLOPSNB_ADMIN_TOKEN': TOKEN}
    script = ("import sys; from mlopsnb.registry import log_bundle; "
              "i = log_bundle(sys.argv[1], registered_name='mnist', alias='champion'); print(i.registered_model_version)")
    def register():
        r = subprocess.run([sys.executable, '-c', script, str(bundles['img'])], env={**os.environ, **env}, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split()[-1]
    assert register() == '1'
    with serving('models:/mnist@champion', log=tmp_path / 'log', env=env, timeout=180) as url:
        status, body, _ = _req(f"{url}/predict", *_multipart('d.png', _png(bundles['x_val'][0])))
        assert status == 200 and body['model']['version'] == '1' and body['model']['name'] == 'mnist', body
        assert body['prediction'] == bundles['img_pred'][0]
        assert register() == '2'                                            # the alias moves to version 2
        assert _req(f"{url}/info")[1]['version'] == '1'                     # nothing changes until the reload
        status, body, _ = _req(f"{url}/admin/reload", b'', {'authorization': f'Bearer {TOKEN}'}, 'POST')
        assert status == 200 and body['models'][0]['version'] == '2', body
        assert _req(f"{url}/predict", *_multipart('d.png', _png(bundles['x_val'][0])))[1]['model']['version'] == '2'
