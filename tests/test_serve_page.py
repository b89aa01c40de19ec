"""The served web page in a real browser: headless Chromium (Debian's, driven by Playwright) opens `/` of a real
`mlopsnb serve`, uploads a digit file, draws a digit, and fills a penguin's row; the page must show what `load_bundle`
predicts for the same input, with its probabilities, warnings and errors, and next to it the explanation `POST /explain`
gives (the occlusion overlay of a digit, KernelSHAP bars of a row), as `Bundle.explain` computes it.

Needs Debian's `chromium` (`.ci/run` installs it) and the `playwright` pip package (in `[dev]`); without either, the
tests skip saying which is missing. Screenshots go to the test's tmp folder and to `_proc/screenshots/` for a person."""
import base64, io, shutil
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else shutil.which('chromium')
# --no-sandbox: Chromium refuses to run as root (CI) with its sandbox; the rest keep it from calling home.
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--no-first-run']
PENGUIN_CONT = ['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g']


def _sync_playwright():
    "Playwright's entry point, or a skip that says what to install"
    if not CHROMIUM: pytest.skip("no Chromium: apt-get install chromium (Debian's; .ci/run installs it)")
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.skip("no playwright: pip install -e '.[dev]' (the playwright pip package drives Debian's chromium)")
    return sync_playwright


@pytest.fixture(scope='module')
def browser():
    sync_playwright = _sync_playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try: yield b
        finally: b.close()


@pytest.fixture
def page(browser):
    "A fresh page that records uncaught script errors and console errors (but not the browser's own line for a 4xx answer)"
    ctx = browser.new_context(viewport={'width': 1200, 'height': 860})
    pg = ctx.new_page()
    errors = []
    pg.on('pageerror', lambda e: errors.append(f"pageerror: {e}"))
    pg.on('console', lambda m: errors.append(f"console.{m.type}: {m.text}")
          if m.type == 'error' and not m.text.startswith('Failed to load resource') else None)
    pg.set_default_timeout(20_000)
    pg.script_errors = errors
    yield pg
    ctx.close()


def _screenshot(pg, tmp_path: Path, name: str) -> Path:
    "Full-page screenshot into the test's tmp folder and a copy in _proc/screenshots/ (git-ignored) for a person"
    shot = tmp_path / f'{name}.png'
    pg.screenshot(path=str(shot), full_page=True)
    keep = ROOT / '_proc' / 'screenshots'
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
    return shot


@pytest.fixture(scope='module')
def mnist(browser, tmp_path_factory):
    "A real MNIST CNN bundle (tests/_trained.py, trained longer than the session fixture), a validation digit saved as PNG, and its server"
    from PIL import Image
    from mlopsnb.export import export_bundle
    from mlopsnb.serve import serving
    from _trained import mnist_cnn_learner
    d = tmp_path_factory.mktemp('page_mnist')
    learn, data, val = mnist_cnn_learner(2000, 50, 2)
    path = export_bundle(learn, d / 'mnist', classes=data.classes, dynamo=False)
    png = d / 'digit.png'
    Image.fromarray(data.x[val[0]]).save(png)
    with serving(path, port=0) as url:
        yield {'path': path, 'png': png, 'url': url, 'classes': data.classes}


@pytest.fixture(scope='module')
def penguins(browser, tmp_path_factory):
    "A penguins tabular bundle (as tests/test_bundle.py builds it), validation rows, and its server"
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner
    import fastai.callback.schedule  # noqa: F401
    from mlopsnb.datasets import penguins as load_penguins, stratified_split
    from mlopsnb.export import export_bundle
    from mlopsnb.serve import serving
    df = load_penguins()
    _, pval = stratified_split(df.species, 0.2, seed=0)
    tdls = TabularDataLoaders.from_df(df, y_names='species', cat_names=['island', 'sex'], cont_names=PENGUIN_CONT,
                                      procs=[Categorify, FillMissing, Normalize], valid_idx=list(pval), bs=32)
    tlearn = tabular_learner(tdls, layers=[16], metrics=None)
    with tlearn.no_bar(), tlearn.no_logging(): tlearn.fit_one_cycle(2, 1e-2)
    raw = df.iloc[pval]
    path = export_bundle(tlearn, tmp_path_factory.mktemp('page_penguins') / 'penguins', example=raw, dynamo=False)
    with serving(path, port=0) as url:
        yield {'path': path, 'raw': raw.dropna(subset=['sex', *PENGUIN_CONT]), 'url': url}


def _predict(pg) -> str:
    "Click Predict and wait until the page has answered (`#result` says done or error); the state it ended in"
    pg.evaluate("document.getElementById('result').dataset.state = ''")
    pg.click('#predict')
    pg.wait_for_selector('#result[data-state=done], #result[data-state=error]')
    return pg.get_attribute('#result', 'data-state')


def _why(pg) -> str:
    "Wait until the page's explanation (`#why`, asked after each prediction) has answered; the state it ended in"
    pg.wait_for_selector('#why[data-state=done], #why[data-state=error]')
    return pg.get_attribute('#why', 'data-state')


def _seen_png(pg) -> bytes:
    "The PNG the page made from the drawing (the 'what the model gets' preview canvas)"
    return base64.b64decode(pg.evaluate("document.querySelector('canvas.seen').toDataURL('image/png').split(',')[1]"))


def test_image_page_upload_draw_and_errors(page, mnist, tmp_path):
    "Upload a real digit: the page shows load_bundle's class and probability; draw a digit: the PNG the page sends is what it shows"
    from PIL import Image
    pg, b = page, load_bundle(mnist['path'])
    pg.goto(mnist['url'] + '/')
    pg.wait_for_selector('#canvas')                      # built from /info: an image bundle
    assert pg.is_enabled('#predict') and pg.text_content('#model').startswith('Model')
    assert 'mnist' in pg.text_content('#model') and '28×28 L image' in pg.text_content('#model')
    # an upload
    pg.set_input_files('#file', str(mnist['png']))
    assert _predict(pg) == 'done', pg.text_content('#error')
    want = b.predict_rows([str(mnist['png'])])[0]
    assert pg.text_content('#prediction') == str(b.predict([str(mnist['png'])])[0]) == str(want['prediction'])
    assert pg.text_content('#probability') == f"{100 * want['probability']:.1f} % probability"
    labels = pg.locator('#bars .label').all_text_contents()
    assert labels == sorted(want['probabilities'], key=want['probabilities'].get, reverse=True)[:10]
    # the explanation next to it: the overlay POST /explain drew, of the map Bundle.explain computes for the same file
    assert _why(pg) == 'done', pg.text_content('#why-note')
    from mlopsnb.explain_command import explanation_picture
    shown = pg.evaluate("document.getElementById('overlay').src").split(',', 1)[1]
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown))).convert('RGB'), dtype=np.int16)
    mine = np.asarray(Image.open(io.BytesIO(explanation_picture(b.explain([str(mnist['png'])])[0]))).convert('RGB'), dtype=np.int16)
    assert overlay.shape == mine.shape == (224, 224, 3) and np.abs(overlay - mine).max() <= 1
    assert pg.is_visible('#overlay') and pg.evaluate("document.getElementById('overlay').naturalWidth") == 224
    assert f"of “{want['prediction']}”" in pg.text_content('#why-note') and 'Occlusion' in pg.text_content('#why-note')
    _screenshot(pg, tmp_path, 'serve_page_explain')
    # a drawing: a small "2" in the upper left of the pad; the page frames it like MNIST before sending it
    box = pg.locator('#canvas').bounding_box()
    at = lambda x, y: (box['x'] + (0.06 + 0.55 * x) * box['width'], box['y'] + (0.06 + 0.55 * y) * box['height'])
    pg.mouse.move(*at(0.3, 0.3))
    pg.mouse.down()
    for x, y in [(0.5, 0.2), (0.68, 0.3), (0.65, 0.45), (0.3, 0.8), (0.72, 0.8)]: pg.mouse.move(*at(x, y), steps=10)
    pg.mouse.up()
    assert pg.get_attribute('#draw-pad', 'class') == 'pad active'
    assert _predict(pg) == 'done', pg.text_content('#error')
    seen = np.asarray(Image.open(io.BytesIO(_seen_png(pg))).convert('L'), dtype=np.float64)
    ys, xs = np.nonzero(seen > 30)
    assert seen.shape == (28, 28) and abs(np.average(np.arange(28), weights=seen.sum(0)) - 14) < 2.5, 'ink not centred'
    assert 12 <= max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 22, 'ink not scaled to ~20 px like MNIST'
    (tmp_path / 'drawn.png').write_bytes(_seen_png(pg))
    assert pg.text_content('#prediction') == str(b.predict([str(tmp_path / 'drawn.png')])[0])
    assert pg.text_content('#prediction') == '2', "a clearly drawn 2, framed like MNIST, should read as a 2 (>0.95 offline)"
    assert _why(pg) == 'done' and 'of “2”' in pg.text_content('#why-note')
    _screenshot(pg, tmp_path, 'serve_page')
    # errors are shown, not swallowed: a file that is no image -> the server's 4xx detail, visibly
    (tmp_path / 'notes.png').write_text('not an image')
    pg.set_input_files('#file', str(tmp_path / 'notes.png'))
    assert _predict(pg) == 'error'
    assert pg.is_visible('#error') and 'image' in pg.text_content('#error').lower()
    pg.click('#clear')
    assert pg.script_errors == []


def test_table_page_form_predicts_and_warns(page, penguins, tmp_path):
    "One input per column; a filled row shows load_bundle's class; an unseen island shows the bundle's warning"
    pg, b = page, load_bundle(penguins['path'])
    pg.goto(penguins['url'] + '/')
    pg.wait_for_selector('input[data-col="body_mass_g"]')
    assert pg.locator('#inputs input').evaluate_all('es => es.map(e => e.dataset.col)') == b.spec['input']['columns']
    assert pg.locator('input[data-col="bill_length_mm"]').get_attribute('type') == 'number'
    options = pg.locator('datalist option').evaluate_all('os => os.map(o => o.value)')
    assert {'Biscoe', 'Dream', 'Torgersen'} <= set(options)
    row = penguins['raw'].iloc[5][['island', 'sex', *PENGUIN_CONT]].to_dict()
    for col, v in row.items(): pg.fill(f'input[data-col="{col}"]', str(v))
    assert _predict(pg) == 'done', pg.text_content('#error')
    want = b.predict_rows([row])[0]
    assert pg.text_content('#prediction') == want['prediction'] == b.predict([row])[0]
    assert pg.locator('#bars .bar').count() == len(b.classes)
    assert pg.locator('#warnings li').count() == 0
    # why: one signed bar per column, largest |KernelSHAP value| first, as Bundle.explain computes them
    assert _why(pg) == 'done', pg.text_content('#why-note')
    ex = b.explain([row])[0]
    order = sorted(ex['values'], key=lambda c: -abs(ex['values'][c]))
    assert [t.split(' = ')[0] for t in pg.locator('#shap .label').all_text_contents()] == order
    assert pg.locator('#shap .sfill.pos').count() == sum(v >= 0 for v in ex['values'].values())
    assert f"probability of “{ex['target']}”" in pg.text_content('#why-note') and pg.is_hidden('#overlay')
    _screenshot(pg, tmp_path, 'serve_page_table_explain')
    pg.fill('input[data-col="island"]', 'Atlantis')
    assert _predict(pg) == 'done', pg.text_content('#error')
    assert 'Atlantis' in pg.text_content('#warnings')
    assert _why(pg) == 'done' and 'island = Atlantis' in pg.locator('#shap .label').all_text_contents()
    _screenshot(pg, tmp_path, 'serve_page_table')
    # an emptied number field is sent as null (missing): the bundle fills it as it would for load_bundle
    pg.fill('input[data-col="island"]', row['island'])
    pg.fill('input[data-col="body_mass_g"]', '')
    assert _predict(pg) == 'done', pg.text_content('#error')
    assert pg.text_content('#prediction') == b.predict([{**row, 'body_mass_g': None}])[0]
    assert pg.script_errors == []


def test_model_card_links_the_run_and_escapes_what_it_shows(page, mnist):
    "The run id links to `mlflow_ui` when that is an http(s) URL; names with markup stay text; a javascript: URL is no link"
    def fake_info(route, run_id, ui):
        info = route.fetch().json()
        route.fulfill(json={**info, 'name': '<img src=x onerror="window.pwned=1">', 'run_id': run_id, 'mlflow_ui': ui})
    ui = 'http://127.0.0.1:5000/#/runs/0123abcd'
    page.route('**/info', lambda route: fake_info(route, '0123abcd', ui))
    page.goto(mnist['url'] + '/')
    page.wait_for_selector('#canvas')
    assert page.evaluate("document.querySelector('#run').tagName") == 'A'
    assert page.get_attribute('#run', 'href') == ui and page.text_content('#run') == '0123abcd'
    assert '<img src=x' in page.text_content('#model') and page.locator('#model img').count() == 0
    assert page.evaluate('window.pwned') is None
    page.unroute('**/info')
    page.route('**/info', lambda route: fake_info(route, '0123abcd', 'javascript:alert(1)'))
    page.reload()
    page.wait_for_selector('#canvas')
    assert page.evaluate("document.querySelector('#run').tagName") == 'CODE' and page.text_content('#run') == '0123abcd'
    assert page.script_errors == []
