"""Test helper: tiny hand-built model bundles (ONNX written with onnx.helper, a numpy reference for the outputs), so bundle
and serving tests need neither torch nor an export."""
import json
from pathlib import Path
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper
from mlopsnb.bundle import BUNDLE_FORMAT, file_sha256

rng = np.random.default_rng(0)

def save_json(d, f): Path(f).write_text(json.dumps(d, indent=1))

def _img_model(W, b):
    nodes = [helper.make_node('Flatten', ['input'], ['f'], axis=1), helper.make_node('Gemm', ['f', 'W', 'b'], ['output'], transB=1)]
    g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 1, 4, 4])],
                          [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['batch', 3])],
                          [numpy_helper.from_array(W, 'W'), numpy_helper.from_array(b, 'b')])
    return helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])

def _tab_model(E, W, b):
    nodes = [helper.make_node('Gather', ['E', 'x_cat'], ['e']), helper.make_node('Flatten', ['e'], ['ef'], axis=1),
             helper.make_node('Concat', ['ef', 'x_cont'], ['h'], axis=1), helper.make_node('Gemm', ['h', 'W', 'b'], ['output'], transB=1)]
    g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x_cat', TensorProto.INT64, ['batch', 2]),
                                       helper.make_tensor_value_info('x_cont', TensorProto.FLOAT, ['batch', 1])],
                          [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['batch', 2])],
                          [numpy_helper.from_array(E, 'E'), numpy_helper.from_array(W, 'W'), numpy_helper.from_array(b, 'b')])
    return helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])

def toy_image_bundle(d):
    d = Path(d); d.mkdir(parents=True, exist_ok=True)
    W, b = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    onnx.save(_img_model(W, b), d/'model.onnx')
    x = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    ref = (((x.astype(np.float32) - np.float32(0.5)*np.float32(255)) / (np.float32(0.25)*np.float32(255))).reshape(5, 16) @ W.T + b)
    np.savez(d/'parity.npz', inputs=x, expected=ref.astype(np.float64))
    save_json({'format': BUNDLE_FORMAT, 'format_version': 1, 'task': 'classification', 'classes': ['a', 'b', 'c'],
                'input': {'kind': 'image', 'dtype': 'uint8', 'layout': 'NHW', 'channels': 1, 'height': 4, 'width': 4, 'pil_mode': 'L', 'resize': 'bilinear'},
                'preprocessing': [{'type': 'normalize_images', 'mean': [0.5], 'std': [0.25], 'scale': 255.0}],
                'model': {'file': 'model.onnx', 'sha256': file_sha256(d/'model.onnx')}, 'parity': {'atol': 1e-4, 'file': 'parity.npz'}}, d/'bundle.json')
    return d, x, ref

def toy_table_bundle(d):
    d = Path(d); d.mkdir(parents=True, exist_ok=True)
    E, W, b = rng.normal(size=(4, 1)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    onnx.save(_tab_model(E, W, b), d/'model.onnx')
    rows = [{'color': 'red', 'size': 1.0}, {'color': 'blue', 'size': None}, {'color': None, 'size': 3.5}, {'color': 'green', 'size': 2.0}]
    cls = {'color': ['#na#', 'blue', 'red'], 'size_na': ['#na#', False, True]}
    def ref(rows):
        cat = np.array([[cls['color'].index(r['color']) if r['color'] in cls['color'] else 0, 2 if r['size'] is None else 1] for r in rows])
        cont = np.array([[((2.0 if r['size'] is None else r['size']) - 2.0) / 0.5] for r in rows], np.float32)
        return np.concatenate([E[cat[:, 0]], E[cat[:, 1]], cont], 1) @ W.T + b
    np.savez(d/'parity.npz', expected=ref(rows).astype(np.float64))
    save_json({'format': BUNDLE_FORMAT, 'format_version': 1, 'task': 'classification', 'classes': ['no', 'yes'],
                'input': {'kind': 'tabular', 'columns': ['color', 'size'], 'raw_cat_names': ['color'], 'cat_names': ['color', 'size_na'], 'cont_names': ['size']},
                'preprocessing': [{'type': 'fill_missing', 'na_dict': {'size': 2.0}, 'add_col': True}, {'type': 'categorify', 'classes': cls},
                                  {'type': 'normalize', 'means': {'size': 2.0}, 'stds': {'size': 0.5}}],
                'model': {'file': 'model.onnx', 'sha256': file_sha256(d/'model.onnx')}, 'parity': {'atol': 1e-4, 'file': 'parity.npz', 'rows': rows}}, d/'bundle.json')
    return d, rows, ref
