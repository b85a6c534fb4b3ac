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


MASK_WORKER = textwrap.dedent('''
    import sys, torch
    from accelerate import Accelerator
    from transformers import BertTokenizerFast
    import numpy as np
    from das.model import tiny_mlm, chunk_texts
    from das.gates import unit_shapes
    from das.dap import train_domain
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    words = [f'w{i}' for i in range(95)]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words)})
    rng = np.random.default_rng(0)
    blocks = chunk_texts(tok, [' '.join(words[int(i)] for i in rng.integers(0, 95, 40)) for _ in range(40)], max_len=32)
    CHOSEN = [('head', 1, 2), ('intermediate', 0, 17), ('output', 1, 5)]

    class Record:                      # after backward (gradients already reduced over processes): keep them
        def __init__(self): self.grads = []
        def after_backward(self): self.grads.append([p.grad.clone() for p in self.model.parameters()])
    class Replay:                      # ... and feed them to the masked run, so both runs see the same gradients
        def __init__(self, grads): self.grads, self.i = grads, 0
        def after_backward(self):
            for p, g in zip(self.model.parameters(), self.grads[self.i]): p.grad = g.clone()
            self.i += 1

    def run(steps, v=None, plugin=None):
        m = tiny_mlm('bert', vocab_size=len(tok), max_len=32, seed=0, dropout=0.0).double()
        imp = None
        if v is not None:
            imp = {k: torch.zeros(s, dtype=torch.float64) for k, s in unit_shapes(m).items()}
            for kind, l, u in CHOSEN: imp[kind][l, u] = v
        if plugin is not None: plugin.model = m
        train_domain(m, tok, blocks, importance=imp, contrast=False, steps=steps, batch_size=4, lr=1e-3, warmup_ratio=0.0,
                     weight_decay=0.01 if steps == 1 else 0.0, seed=0, accelerator=acc, progress=False,
                     plugins=[plugin] if plugin is not None else ())
        return {k: p.detach().clone() for k, p in m.named_parameters()}

    out = {'world': acc.num_processes}
    for steps in (1, 20):
        rec = Record(); out[steps, None] = run(steps, None, rec)
        for v in (0.0, 0.5, 0.9, 1.0): out[steps, v] = run(steps, v, None if steps == 1 else Replay(rec.grads))
    if acc.is_main_process: torch.save(out, sys.argv[1])
''')


def test_update_mask_two_processes(tmp_path):
    "Update masking under accelerate with 2 gloo processes: the chosen slices move (1 - v) x their unmasked change."
    (tmp_path/'worker.py').write_text(MASK_WORKER)
    run([sys.executable, 'worker.py', 'one.pt'], tmp_path)
    launch(2, 'worker.py', 'two.pt', cwd=tmp_path)
    one, two = (torch.load(tmp_path/f, weights_only=False) for f in ('one.pt', 'two.pt'))
    assert (one['world'], two['world']) == (1, 2)
    start = dict(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0).double().named_parameters())
    names = {'bert.encoder.layer.1.attention.self.query.weight': (slice(16, 24),),
             'bert.encoder.layer.1.attention.output.dense.weight': (slice(None), slice(16, 24)),
             'bert.encoder.layer.0.intermediate.dense.weight': (17,), 'bert.encoder.layer.1.output.dense.bias': (5,)}
    for steps in (1, 20):
        free = two[steps, None]
        for v in (0.0, 0.5, 0.9, 1.0):
            got = two[steps, v]
            for k in got:                                             # 2 processes = 1 process
                torch.testing.assert_close(got[k], one[steps, v][k], atol=1e-6, rtol=1e-5)
            if v == 0.0: assert all(torch.equal(got[k], free[k]) for k in free)
            for k, idx in names.items():
                d_free, d_mask = (free[k] - start[k].detach())[idx], (got[k] - start[k].detach())[idx]
                if v == 1.0: assert torch.equal(got[k][idx], start[k].detach()[idx]), k
                else:
                    err = float((d_mask - (1 - v) * d_free).norm() / ((1 - v) * d_free).norm())
                    assert err <= 1e-4, (steps, v, k, err)
            other = torch.ones_like(free['bert.encoder.layer.0.intermediate.dense.weight'], dtype=torch.bool); other[17] = False
            k = 'bert.encoder.layer.0.intermediate.dense.weight'
            assert torch.equal(got[k][other], free[k][other])            # the other units follow the unmasked run exactly
