"Tests of das.softmask: gradient soft-masking per unit."
import copy
import pytest, torch
from das.core import DasError
from das.gates import encoder_layers, unit_shapes
from das.model import tiny_mlm, mlm_loss
from das.softmask import SoftMask

def _batch():
    ids = torch.randint(5, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    lab = torch.where(torch.rand(4, 12, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    return {'input_ids': ids, 'labels': lab}

def _step(m0, imp, mask_fn=None):
    m = copy.deepcopy(m0); opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    mlm_loss(m, _batch())[0].backward()
    raw = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    if imp is not None: SoftMask(m, imp).apply()
    if mask_fn is not None: mask_fn(m)
    masked = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    opt.step(); return m, raw, masked

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
@pytest.mark.parametrize('kind,l,u', [('head', 1, 1), ('intermediate', 0, 40), ('output', 1, 9)])
def test_importance_one_freezes_exactly_the_unit(fam, kind, l, u):
    m0 = tiny_mlm(fam); sh = unit_shapes(m0); dh = m0.config.hidden_size // sh['head'][1]
    imp = {k: torch.zeros(s) for k, s in sh.items()}; imp[kind][l, u] = 1.0
    m1, raw, _ = _step(m0, imp)
    L0, L1 = encoder_layers(m0)[l], encoder_layers(m1)[l]
    if kind == 'head':
        r = slice(u*dh, (u+1)*dh)
        for x in ('query', 'key', 'value'):
            a, b = getattr(L0.attention.self, x), getattr(L1.attention.self, x)
            assert torch.equal(a.weight[r], b.weight[r]) and torch.equal(a.bias[r], b.bias[r])
            assert not torch.equal(a.weight, b.weight)
        a, b = L0.attention.output.dense, L1.attention.output.dense
        assert torch.equal(a.weight[:, r], b.weight[:, r]) and not torch.equal(a.weight, b.weight)
        assert not torch.equal(a.bias, b.bias)   # its bias belongs to no head
    else:
        a, b = (L0.intermediate.dense, L1.intermediate.dense) if kind == 'intermediate' else (L0.output.dense, L1.output.dense)
        assert torch.equal(a.weight[u], b.weight[u]) and torch.equal(a.bias[u], b.bias[u])
        assert not torch.equal(a.weight, b.weight) and not torch.equal(a.bias, b.bias)

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_zero_is_no_mask_and_half_halves(fam):
    m0 = tiny_mlm(fam); sh = unit_shapes(m0)
    _, raw, masked = _step(m0, {k: torch.zeros(s) for k, s in sh.items()})
    assert all(torch.equal(raw[n], masked[n]) for n in raw)
    _, raw, masked = _step(m0, {k: torch.full(s, 0.5) for k, s in sh.items()})
    q = [n for n in raw if n.endswith('layer.0.attention.self.query.weight')][0]
    assert torch.equal(masked[q], raw[q] * 0.5)
    for n in raw:
        if 'LayerNorm' in n or 'embeddings' in n or n.startswith(('cls.', 'lm_head.')) or n.endswith('attention.output.dense.bias'):
            assert torch.equal(raw[n], masked[n]), n

def test_reference_column_masking_fails_the_freeze_test():
    m0 = tiny_mlm('bert'); sh = unit_shapes(m0); l, h = 0, 1; dh = m0.config.hidden_size // sh['head'][1]
    imp = {k: torch.zeros(s) for k, s in sh.items()}; imp['head'][l, h] = 1.0
    def ref_bug(m):
        s = (1 - imp['head'][l]).repeat_interleave(dh)[None, :]
        with torch.no_grad(): encoder_layers(m)[l].attention.self.query.weight.grad.mul_(s)
    m1, _, _ = _step(m0, None, ref_bug)
    W0, W1 = encoder_layers(m0)[l].attention.self.query.weight, encoder_layers(m1)[l].attention.self.query.weight
    assert not torch.equal(W0[h*dh:(h+1)*dh], W1[h*dh:(h+1)*dh])   # the head's own rows moved

def test_errors():
    m = tiny_mlm('bert')
    with pytest.raises(DasError, match='head importance has shape'): SoftMask(m, {'head': torch.zeros(2, 5)})
    with pytest.raises(DasError, match='outside'): SoftMask(m, {'output': torch.full((2, 32), -0.1)})
    with pytest.raises(DasError, match='kinds from'): SoftMask(m, [1, 2])
