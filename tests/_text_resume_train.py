"""Helper for tests/test_text_resume.py: fine-tune a tiny BERT on Rotten Tomatoes snippets with mlops_learner and
checkpoints every 3 batches, optionally SIGKILLing itself. Usage: python _text_resume_train.py OUT_DIR MODE [EPOCH ITER]
MODE: 'full' (train, save final weights), 'kill' (SIGKILL after batch ITER of EPOCH), 'resume' (resume from OUT_DIR/ck)."""
import os, signal, sys
from pathlib import Path
import torch

EPOCHS, LR = 2, 1e-3

def build(out:Path):
    import transformers
    from mlopsnb.datasets import rotten_tomatoes
    from mlopsnb.text import text_dls, text_learner
    rt = rotten_tomatoes()
    trn, val = rt[rt.split == 'train'].iloc[:192], rt[rt.split == 'valid'].iloc[:32]
    dls = text_dls(trn.text, trn.label, val.text, val.label, max_length=48, bs=16, seed=1, device='cpu')
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)  # dropout in the encoder and the head: the torch RNG matters
    learn = text_learner(dls, encoder=transformers.BertModel(cfg, add_pooling_layer=False), tracking=False, progress='none',
                         checkpoint_dir=Path(out) / 'ck', checkpoint_every_iters=3)
    learn.logger = lambda *a, **k: None
    return learn

def run(out:Path, mode:str) -> dict:
    "Run a 'full' or 'resume' fit in this process; return the final weights"
    learn = build(out)
    if mode == 'full': learn.fit_one_cycle(EPOCHS, LR)
    else: learn.resume(Path(out) / 'ck')
    return {k: v.clone() for k, v in learn.model.state_dict().items()}

if __name__ == '__main__':
    torch.set_num_threads(1)
    OUT, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == 'kill':
        from fastai.callback.core import Callback
        at = (int(sys.argv[3]), int(sys.argv[4]))
        class Kill(Callback):
            order = 1000
            def after_batch(self):
                if self.learn.training and (self.epoch, self.iter) == at: os.kill(os.getpid(), signal.SIGKILL)
        learn = build(OUT); learn.add_cb(Kill())
        learn.fit_one_cycle(EPOCHS, LR)
        raise SystemExit('the kill point was never reached')
    torch.save(run(OUT, mode), OUT / 'final.pt')
