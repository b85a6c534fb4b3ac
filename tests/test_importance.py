"Tests of das.importance: per-example gate-gradient importance, normalization, EMax, files."
import pytest, torch
from das.core import DasError
from das.gates import KINDS, UnitGates, unit_shapes
from das.model import tiny_mlm
from das.importance import (accumulate, compute_importance, load_importance, mlm_example_loss, normalize,
                            proxy_kl_loss, random_importance, save_importance, unmasked_ids)

def _batch(B=4, T=14, seed=0, mask_id=3):
    g = torch.Generator().manual_seed(seed)
    orig = torch.randint(5, 100, (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long); am[-1, -3:] = 0
    tgt = (torch.rand(B, T, generator=g) < 0.25) & am.bool(); tgt[:, 1] = True
    ids = torch.where(tgt, torch.full_like(orig, mask_id), orig)
    return {'input_ids': ids, 'attention_mask': am, 'labels': torch.where(tgt, orig, -100)}

def _batches(n=2): return [_batch(seed=i) for i in range(n)]

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_kl_proxy_needs_dropout(fam):
    m, b = tiny_mlm(fam), _batch()
    m.eval(); assert proxy_kl_loss(m, b).abs().max().item() == 0.0      # the reference code's eval-mode bug
    m.train(); assert (proxy_kl_loss(m, b) > 0).all()
    with pytest.raises(DasError, match='identically 0'): compute_importance(m, _batches(), loss='kl', dropout=False)

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
@pytest.mark.parametrize('loss', ['kl', 'mlm'])
def test_nonzero_normalized_and_reproducible(fam, loss):
    m = tiny_mlm(fam)
    raw = compute_importance(m, _batches(), loss=loss, normalized=False)
    assert {k: tuple(v.shape) for k, v in raw.items()} == unit_shapes(m)
    assert all((v > 0).float().mean() > 0.9 for v in raw.values())
    imp = normalize(raw)
    assert all(((v >= 0) & (v < 1)).all() for v in imp.values())
    again = compute_importance(m, _batches(), loss=loss, normalized=False)
    assert all(torch.equal(raw[k], again[k]) for k in KINDS)

def test_per_example_abs_mean():
    m = tiny_mlm('bert').double(); b = _batch(B=3)
    batched = compute_importance(m, [b], loss='mlm', normalized=False)
    singles = compute_importance(m, [{k: v[i:i+1] for k, v in b.items()} for i in range(3)], loss='mlm', normalized=False)
    for k in KINDS: torch.testing.assert_close(batched[k], singles[k])
    assert all(p.grad is None for p in m.parameters())     # only the gates are differentiated

def test_mlm_uses_masked_input():
    m = tiny_mlm('roberta'); b = _batch(seed=4)
    st = {}; compute_importance(m, [b], loss='mlm', stats=st)
    with torch.no_grad():
        masked = mlm_example_loss(m, b).mean().item()
        visible = mlm_example_loss(m, {**b, 'input_ids': unmasked_ids(b)}).mean().item()
    assert abs(st['mean_loss'] - masked) < 1e-5 and abs(visible - masked) > 1e-4
    with pytest.raises(DasError, match='reference code'):
        compute_importance(m, [{**b, 'input_ids': unmasked_ids(b)}], loss='mlm')

def test_normalize_range_and_constant_layer():
    r = normalize({'intermediate': torch.tensor([[0.] * 300 + [1e9], [2.] * 301])})['intermediate']
    assert ((r >= 0) & (r < 1)).all() and r[1].abs().sum() == 0

def test_accumulate_is_elementwise_max_and_random():
    a = {k: torch.rand(2, 5, generator=torch.Generator().manual_seed(0)) for k in KINDS}
    c = {k: torch.rand(2, 5, generator=torch.Generator().manual_seed(1)) for k in KINDS}
    acc = accumulate(a, c)
    for k in KINDS: assert torch.equal(acc[k], torch.maximum(a[k], c[k]))
    with pytest.raises(DasError): accumulate(a, {k: torch.zeros(2, 4) for k in KINDS})
    sh = {'head': (2, 4), 'output': (2, 32)}
    r0, r1 = random_importance(sh, 0), random_importance(sh, 0)
    assert all(torch.equal(r0[k], r1[k]) and ((r0[k] >= 0) & (r0[k] < 1)).all() for k in sh)

def test_files_roundtrip_and_refusals(tmp_path):
    m = tiny_mlm('bert')
    imp = compute_importance(m, _batches(1), loss='kl')
    p = save_importance(imp, tmp_path / 'imp_general.pt', {'domains': ['general'], 'seed': 0, 'loss': 'kl', 'n_samples': 4}, model=m)
    back, meta = load_importance(p, m, with_meta=True)
    assert all(torch.equal(back[k], imp[k]) for k in KINDS) and meta['domains'] == ['general']
    load_importance(p, tiny_mlm('bert', seed=3))                               # same architecture, other weights: fine
    with pytest.raises(DasError, match='imp_general.pt was computed for another model'): load_importance(p, tiny_mlm('roberta'))
    other = tiny_mlm('bert', layers=3)
    p2 = save_importance(random_importance(unit_shapes(other)), tmp_path / 'imp3.pt')
    with pytest.raises(DasError, match='imp3.pt holds importance of shapes'): load_importance(p2, m)
    with pytest.raises(DasError, match='does not exist'): load_importance(tmp_path / 'nope.pt', m)
    assert sorted(f.name for f in tmp_path.iterdir()) == ['imp3.pt', 'imp_general.pt']

def test_kl_grad_views():
    m, b = tiny_mlm('bert'), _batch()
    m.train()
    for gv in (1, 2): assert (proxy_kl_loss(m, b, grad_views=gv) > 0).all()
    m.eval()
    for gv in (1, 2): assert proxy_kl_loss(m, b, grad_views=gv).abs().max().item() == 0.0
    one = compute_importance(m, _batches(), loss='kl', grad_views=1, normalized=False)
    two = compute_importance(m, _batches(), loss='kl', grad_views=2, normalized=False)
    assert all((one[k] > 0).float().mean() > 0.9 and not torch.equal(one[k], two[k]) for k in KINDS)
    with pytest.raises(DasError, match='grad_views'): compute_importance(m, _batches(), loss='kl', grad_views=0)
