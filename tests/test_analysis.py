"The issue's must-show checks for analysis and validation, as plain pytest tests (the notebooks hold the full examples)."
import numpy as np
import pandas as pd
import pytest

from mlopsnb.analysis import analyze, compare_splits, find_leakage, drift_table, drift_from_reference, reference_stats
from mlopsnb.datasets import split_frame
from mlopsnb.validation import SchemaError, infer_schema, validate


@pytest.fixture(scope='module')
def frame():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f'x{i}': rng.normal(size=3000) for i in range(8)})
    df['c'] = pd.Categorical(rng.choice(list('abcd'), 3000)); df['y'] = rng.integers(0, 3, 3000)
    return split_frame(df, 'y', valid_pct=0.3, seed=0)


def test_planted_leakage_exactly_reported(frame):
    trn, val = frame
    planted = trn.sample(10, random_state=3)
    leak = find_leakage(trn, pd.concat([val, planted]))
    assert sorted(leak.valid_index) == sorted(planted.index) == sorted(leak.train_index)
    assert compare_splits(trn, pd.concat([val, planted])).stats['n_leaked_valid'] == 10
    assert len(find_leakage(trn, val)) == 0


@pytest.mark.parametrize('col', ['x2', 'x6', 'c'])
def test_planted_shift_ranks_first(frame, col):
    trn, val = frame
    val = val.copy()
    if col == 'c': val['c'] = val.c.where(np.random.default_rng(1).random(len(val)) < 0.5, 'a')
    else: val[col] = val[col] * 1.5 + 0.3
    t = drift_table(trn, val)
    assert t.column.iloc[0] == col and t.drifted.tolist().count(True) == 1
    assert drift_from_reference(reference_stats(trn), val).column.iloc[0] == col


def test_validate_names_all_three():
    from mlopsnb.datasets import penguins
    df = penguins(); schema = infer_schema(df)
    bad = df.drop(columns='island').assign(body_mass_g=df.body_mass_g.astype(str))
    bad.loc[bad.index[:4], 'sex'] = np.nan
    schema['columns']['sex']['nullable'] = False  # penguins has NaN in sex; pretend training had none
    with pytest.raises(SchemaError) as e: validate(bad, schema)
    msg = str(e.value)
    assert len(e.value.violations) == 3 and msg.startswith('3 schema violations')
    assert "missing column 'island'" in msg and "column 'body_mass_g': wrong dtype" in msg and "column 'sex':" in msg
    assert {v.check for v in validate(bad, schema, lazy=True)} == {'missing_column', 'dtype', 'nulls'}


def test_plots_are_lazy(frame):
    r = analyze(frame[0], target='y')
    assert r._png == {} and set(r.plot_names) >= {'missing', 'distributions', 'correlation', 'target'}
    assert r.png('missing')[:4] == b'\x89PNG' and list(r._png) == ['missing']
