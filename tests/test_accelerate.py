"""Data parallelism: 2 CPU processes (gloo) give what 1 process gives on the same global batch.

Launched with `accelerate launch --multi_gpu --num_processes 2`: on a machine without GPUs this starts 2 CPU
processes on the gloo backend. (`accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x.)
"""
import sys, textwrap
import torch
from das.model import tiny_mlm
from launch import launch, run

WORKER = textwrap.dedent('''
    import sys, torch
    from accelerate import Accelerator
    from transformers import BertTokenizerFast
    import numpy as np
    from das.model import tiny_mlm, chunk_texts
    from das.dap import block_loader, importance_across, train_domain
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    words = [f'w{i}' for i in range(95)]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words)})
    rng = np.random.default_rng(0)
    texts = [' '.join(words[int(i)] for i in rng.integers(0, 95, 40)) for _ in range(40)]
    blocks = chunk_texts(tok, texts, max_len=32)
    model = tiny_mlm('bert', vocab_size=len(tok), max_len=32, seed=0, dropout=0.0)   # dropout off: deterministic
    dl = block_loader(blocks, tok.mask_token_id, model.config.vocab_size, n_rows=8, batch_size=4, seed=3,
                      accelerator=acc, shuffle=False)
    imp = importance_across(model, dl, acc, loss='mlm')
    hist = train_domain(model, tok, blocks, importance=imp, steps=2, batch_size=4, lr=1e-3, warmup_ratio=0.0,
                        seed=0, accelerator=acc, progress=False)
    if acc.is_main_process:
        torch.save({'imp': imp, 'params': {k: v.clone() for k, v in model.state_dict().items()}, 'hist': hist,
                    'world': acc.num_processes}, sys.argv[1])
''')

def test_two_processes_equal_one(tmp_path):
    (tmp_path/'worker.py').write_text(WORKER)
    run([sys.executable, 'worker.py', 'one.pt'], tmp_path)
    launch(2, 'worker.py', 'two.pt', cwd=tmp_path)
    one, two = (torch.load(tmp_path/f, weights_only=False) for f in ('one.pt', 'two.pt'))
    assert (one['world'], two['world']) == (1, 2)
    for k in one['imp']:                                            # importance of the same 8 examples
        torch.testing.assert_close(two['imp'][k], one['imp'][k], atol=1e-5, rtol=1e-4)
    # parameters after 2 DAS steps (AdamW, lr 1e-3). Adam scales every update to about lr whatever the gradient's
    # size, so for a gradient element near 0 float noise (sums in another order) can move it by a fraction of lr:
    # the tolerance is 1% of one step. The parameters themselves moved by ~100x that.
    start = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0).state_dict()
    moved = max(float((one['params'][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3, moved
    for k in one['params']:
        torch.testing.assert_close(two['params'][k], one['params'][k], atol=1e-5, rtol=1e-5, msg=lambda m: f"{k}: {m}")
    for key in ('mlm', 'contrast', 'accuracy'):                     # logged losses are global
        torch.testing.assert_close(torch.tensor(two['hist'][key]), torch.tensor(one['hist'][key]), atol=1e-5, rtol=1e-5)
    assert one['hist']['config']['negatives'] and one['hist']['config']['processes'] == 1
