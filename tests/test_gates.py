"Tests of das.gates: virtual unit gates attached by hooks."
import copy
import pytest, torch
from das.core import DasError
from das.gates import KINDS, UnitGates, encoder_layers, unit_shapes
from das.model import tiny_mlm

def _batch(B=3, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'input_ids': torch.randint(5, 100, (B, T), generator=g), 'attention_mask': torch.ones(B, T, dtype=torch.long)}

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_identity_is_bit_identical(fam):
    m, b = tiny_mlm(fam), _batch()
    with torch.no_grad():
        ref = m(**b).logits
        g = UnitGates(m)
        assert torch.equal(m(**b).logits, ref)
        with g.gated({k: torch.ones(s) for k, s in g.shapes.items()}): assert torch.equal(m(**b).logits, ref)
        g.remove(); assert torch.equal(m(**b).logits, ref)

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_head_gate_zero_equals_zeroed_columns(fam):
    m, b = tiny_mlm(fam), _batch(); g = UnitGates(m); l, h, dh = 0, 3, g.head_dim
    v = torch.ones(g.shapes['head']); v[l, h] = 0
    with torch.no_grad(), g.gated({'head': v}): out = m(**b).logits
    g.remove(); m2 = copy.deepcopy(m)
    with torch.no_grad():
        encoder_layers(m2)[l].attention.output.dense.weight[:, h*dh:(h+1)*dh] = 0
        torch.testing.assert_close(out, m2(**b).logits, atol=1e-5, rtol=0)

@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_gate_gradient_matches_finite_difference(fam):
    m, b = tiny_mlm(fam).double(), _batch(); g = UnitGates(m)
    f = lambda: m(**b).logits.pow(2).mean()
    with g.track(): f().backward()
    gr = g.grads()
    for k, idx in [('head', (1, 0)), ('intermediate', (1, 30)), ('output', (0, 11))]:
        vals = []
        for s in (1, -1):
            v = torch.ones(g.shapes[k]); v[idx] += s * 1e-3
            with torch.no_grad(), g.gated({k: v}): vals.append(f().item())
        fd = (vals[0] - vals[1]) / 2e-3
        assert abs(gr[k][idx].item() - fd) < 1e-5 + 1e-3 * abs(fd)

def test_per_example_gates_and_grads():
    m, b = tiny_mlm('roberta'), _batch(B=4); g = UnitGates(m)
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(0)) for k, s in g.shapes.items()}
    rows = torch.tensor([True, False, True, False])
    with torch.no_grad():
        plain = m(**b).logits
        with g.gated(imp): gated = m(**b).logits
        with g.gated(UnitGates.rows(imp, rows)): mixed = m(**b).logits
    assert torch.equal(mixed[~rows], plain[~rows])
    torch.testing.assert_close(mixed[rows], gated[rows], atol=1e-5, rtol=0)
    md = m.double()
    with g.track(batch_size=4): md(**b).logits.pow(2).mean((1, 2)).sum().backward()
    per = g.grads()
    with g.track(): md(**{k: v[2:3] for k, v in b.items()}).logits.pow(2).mean((1, 2)).sum().backward()
    one = g.grads()
    for k in KINDS: torch.testing.assert_close(per[k][2], one[k])

def test_errors():
    m = tiny_mlm('bert'); g = UnitGates(m)
    assert unit_shapes(m) == {'head': (2, 4), 'intermediate': (2, 64), 'output': (2, 32)}
    with pytest.raises(DasError, match='head gates have shape'): g.set({'head': torch.ones(4, 2)})
    with pytest.raises(DasError, match='unknown unit kind'): g.set({'ffn': torch.ones(2, 64)})
    with pytest.raises(DasError, match='no tracked gates'): g.grads()
    with pytest.raises(DasError, match='not a supported architecture'): UnitGates(torch.nn.Linear(2, 2))
    with g.gated({'output': torch.ones(5, 2, 32)}), pytest.raises(DasError, match='5 rows but the batch has 3'): m(**_batch())
