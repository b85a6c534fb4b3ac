"""das.dap: one domain of DAP training on a tiny model."""
import copy
import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast
from das.core import DasError
from das.model import chunk_texts, tiny_mlm
from das.gates import UnitGates, unit_shapes
from das.dap import Encoder, block_loader, dap_loss, train_domain

torch.set_num_threads(1)   # tiny models: threads only add overhead


@pytest.fixture(scope='module')
def toy():
    words = [f'w{i}' for i in range(95)]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words)})
    rng, texts = np.random.default_rng(0), []
    for _ in range(60):
        w = [int(rng.integers(95))]
        for _ in range(39): w.append((w[-1] + 1) % 95 if rng.random() < 0.7 else int(rng.integers(95)))
        texts.append(' '.join(words[i] for i in w))
    return tok, chunk_texts(tok, texts, max_len=32)


def model_():
    return tiny_mlm('bert', vocab_size=100, max_len=32, seed=0)


def flat(m): return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_importance_one_freezes_units_bit_identical(toy):
    tok, blocks = toy
    m0 = model_()
    imp = {k: torch.zeros(s) for k, s in unit_shapes(m0).items()}
    imp['head'][0, 1] = 1.0; imp['intermediate'][1, 3:9] = 1.0; imp['output'][0, 7] = 1.0
    m1 = copy.deepcopy(m0)
    train_domain(m1, tok, blocks, imp, steps=1, batch_size=8, lr=1e-2, warmup_ratio=0.0, weight_decay=0.1, progress=False)
    L0, L1 = m0.bert.encoder.layer, m1.bert.encoder.layer
    dh = 8
    for name in ('query', 'key', 'value'):
        w0, w1 = getattr(L0[0].attention.self, name), getattr(L1[0].attention.self, name)
        assert torch.equal(w0.weight[dh:2 * dh], w1.weight[dh:2 * dh]) and torch.equal(w0.bias[dh:2 * dh], w1.bias[dh:2 * dh])
        assert not torch.equal(w0.weight[2 * dh:], w1.weight[2 * dh:])           # other heads moved
    assert torch.equal(L0[0].attention.output.dense.weight[:, dh:2 * dh], L1[0].attention.output.dense.weight[:, dh:2 * dh])
    assert torch.equal(L0[1].intermediate.dense.weight[3:9], L1[1].intermediate.dense.weight[3:9])
    assert torch.equal(L0[1].intermediate.dense.bias[3:9], L1[1].intermediate.dense.bias[3:9])
    assert torch.equal(L0[0].output.dense.weight[7], L1[0].output.dense.weight[7])
    assert torch.equal(L0[0].output.dense.bias[7], L1[0].output.dense.bias[7])
    assert not torch.equal(L0[1].intermediate.dense.weight[:3], L1[1].intermediate.dense.weight[:3])


def test_loss_decreases_on_repeated_batch(toy):
    tok, blocks = toy
    m = model_().train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(1)) for k, s in unit_shapes(m).items()}
    b = next(iter(block_loader(blocks, tok.mask_token_id, 100, n_rows=8, batch_size=8)))
    gates, net = UnitGates(m), Encoder(m)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(12):
        out = dap_loss(net, m, b, gates, imp)
        out['loss'].backward(); opt.step(); opt.zero_grad()
        losses.append((out['mlm'], out['contrast']))
    assert losses[-1][0] < losses[0][0] - 0.5                   # MLM
    assert losses[-1][0] + losses[-1][1] < losses[0][0] + losses[0][1]


def test_train_domain_mlm_decreases(toy):
    tok, blocks = toy
    h = train_domain(model_(), tok, blocks.select(range(8)), steps=15, batch_size=8, lr=3e-3, warmup_ratio=0.0, progress=False)
    assert np.mean(h['mlm'][-3:]) < np.mean(h['mlm'][:3])
    assert h['contrast'] == [None] * 15                          # importance=None: NCL


def test_determinism(toy):
    tok, blocks = toy
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(2)) for k, s in unit_shapes(model_()).items()}
    runs = []
    for seed in (0, 0, 1):
        m = model_()
        h = train_domain(m, tok, blocks, imp, steps=3, batch_size=8, lr=1e-3, seed=seed, progress=False)
        runs.append((flat(m), h['mlm'], h['contrast']))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1:] == runs[1][1:]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_flags_and_errors(toy):
    tok, blocks = toy
    m = model_()
    h = train_domain(m, tok, blocks, steps=1, batch_size=4, progress=False, contrast=True)   # in-batch contrast, no importance
    assert h['config']['contrast'] and not h['config']['negatives'] and h['contrast'][0] is not None
    with pytest.raises(DasError, match='steps=0'): train_domain(m, tok, blocks, steps=0)
    with pytest.raises(DasError, match='tau=0'): train_domain(m, tok, blocks, steps=1, tau=0)
    with pytest.raises(DasError, match='head importance has shape'): train_domain(m, tok, blocks, {'head': torch.zeros(3, 3)})


def test_contrast_rows(toy):
    tok, blocks = toy
    m = model_().train()
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(1)) for k, s in unit_shapes(m).items()}
    b = next(iter(block_loader(blocks, tok.mask_token_id, 100, n_rows=8, batch_size=8)))
    gates, net = UnitGates(m), Encoder(m)
    rows = []
    hk = net.register_forward_hook(lambda mod, a, o: rows.append(a[0].shape[0]))
    torch.manual_seed(0); full = dap_loss(net, m, b, gates, imp)
    torch.manual_seed(0); same = dap_loss(net, m, b, gates, imp, contrast_rows=8)
    rows.clear(); torch.manual_seed(0); half = dap_loss(net, m, b, gates, imp, contrast_rows=4)
    hk.remove()
    assert full['loss'].item() == same['loss'].item()              # all rows: exactly the default
    assert rows == [8 + 4, 4 + 4] and half['contrast'] is not None  # MLM on 8 rows, views on 4
    for bad in (1, 9):
        with pytest.raises(DasError, match=f'contrast_rows={bad}'): dap_loss(net, m, b, gates, imp, contrast_rows=bad)
