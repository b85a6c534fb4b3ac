"""das.cl_plugins: DAP-Adapter, DAP-Prompt, HAT and CPT as plugins of the continual loop, on a tiny model and two toy domains."""
import copy
import pytest, torch
from safetensors.torch import load_file
from das.core import DasError, load_json
from das.continual import DapConfig, make_method, run_continual
import das.cl_plugins as cp
from das.cl_plugins import (CPT, HAT, AdapterStack, DapAdapter, DapPrompt, SoftPrompt, TaskMasks, adapter_block_pairs,
                            load_with_plugins)
from das.softmask import SoftMask
from das.model import encode, load_mlm, save_mlm, tiny_mlm, tiny_tokenizer

torch.set_num_threads(1)
TOK = tiny_tokenizer()
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
CFG = DapConfig(steps=6, batch_size=4, max_len=16, importance_batches=1, lr=1e-2)
KW = dict(progress=False, corpus=TOY.get)
IDS = TOK(['w1 w2 w3 w4 w5', 'w6 w7'], padding=True, return_tensors='pt')


def enc(m): return encode(m, IDS['input_ids'], IDS['attention_mask'])
def lm(d): return load_mlm(d, verbose=False)[0]
def same_lm(m1, m2): return all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


@pytest.fixture(scope='module')
def gdir(tmp_path_factory):
    return save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0), TOK, tmp_path_factory.mktemp('g')/'general')


def spy(cls):
    "A subclass recording the live model's hidden states at the end of each domain (before the plugin tidies up)."
    class Spy(cls):
        name = cls.name            # same plugin name: plugin.json dispatches on it
        def after_domain(self, run):
            with torch.no_grad(): self.live.append(enc(run.model))
            super().after_domain(run)
    s = Spy(); s.live = []
    return s


# ---------------------------------------------------------------- adapter
def test_adapter_starts_exact_lm_frozen_adapters_move_and_reload(tmp_path, gdir):
    m = lm(gdir); ref = enc(m)
    st = AdapterStack.for_model(m, 8).attach(m)
    assert torch.equal(enc(m), ref)                                           # zero up-projection: exactly the LM
    st.detach()
    s = spy(DapAdapter); s.params['size'] = 8
    run_continual(s, ['a', 'b'], gdir, tmp_path/'ad', CFG, **KW)
    g = lm(gdir)
    for ck in ('0-a', '1-b'): assert same_lm(g, lm(tmp_path/'ad'/ck))        # the LM's own weights: bit-identical
    A0, A1 = (load_file(str(tmp_path/'ad'/c/'adapters.safetensors')) for c in ('0-a', '1-b'))
    assert all(A0[k].abs().sum() > 0 for k in A0 if k.endswith('up.weight')) # moved from zero
    assert any(not torch.equal(A0[k], A1[k]) for k in A0)                    # one adapter set, trained on b too
    assert load_json(tmp_path/'ad'/'1-b'/'plugin.json')['plugin'] == 'adapter'
    for i, ck in enumerate(('0-a', '1-b')):                                   # the evaluation model = the live model
        mm, _ = load_with_plugins(tmp_path/'ad'/ck, verbose=False)
        torch.testing.assert_close(enc(mm), s.live[i], rtol=0, atol=1e-6)
        assert not torch.equal(enc(mm), ref)
    mm, _ = load_with_plugins(tmp_path/'ad'/'1-b', domain='whatever', verbose=False)   # adapters ignore the domain
    mc = copy.deepcopy(mm)                                                    # fine-tuning deep-copies: adapters follow
    assert sum('das_adapter' in n for n, _ in mc.bert.named_parameters()) == 4 * 4
    torch.testing.assert_close(enc(mc), enc(mm))


def test_adapter_resume_equals_uninterrupted(tmp_path, gdir):
    cfg = DapConfig(steps=3, batch_size=4, max_len=16, lr=1e-2)
    run_continual(make_method('adapter', {'size': 4}), ['a', 'b'], gdir, tmp_path/'u', cfg, **KW)
    run_continual(make_method('adapter', {'size': 4}), ['a', 'b'], gdir, tmp_path/'r', cfg, until=0, **KW)
    run_continual(make_method('adapter', {'size': 4}), ['a', 'b'], gdir, tmp_path/'r', cfg, **KW)
    U, R = (load_file(str(tmp_path/d/'1-b'/'adapters.safetensors')) for d in ('u', 'r'))
    assert all(torch.equal(U[k], R[k]) for k in U)


# ---------------------------------------------------------------- prompt
@pytest.mark.parametrize('family', ['bert', 'roberta'])
def test_prompt_shapes_positions_and_detach(family):
    m = tiny_mlm(family, vocab_size=100, max_len=32)
    pad = m.config.pad_token_id
    ids = IDS['input_ids'].masked_fill(IDS['attention_mask'] == 0, pad)       # the model's own padding id
    run = lambda: encode(m, ids, IDS['attention_mask'])
    ref, lg = run(), m(input_ids=ids, attention_mask=IDS['attention_mask']).logits
    seen = {}
    h = m.base_model.embeddings.register_forward_pre_hook(lambda mod, a, k: seen.update(k), with_kwargs=True)
    run(); pos0 = seen['position_ids']
    assert pos0 is None                                                      # computed inside the embeddings:
    pos0 = (torch.arange(ids.shape[1]).expand_as(ids) if family == 'bert'     # BERT 0..T-1, RoBERTa padding-aware
            else m.base_model.embeddings.create_position_ids_from_input_ids(ids, pad))
    sp = SoftPrompt(m, 3).attach(m)
    assert run().shape == ref.shape                                          # (B, T, d) aligned with the tokens
    assert m(input_ids=ids, attention_mask=IDS['attention_mask']).logits.shape == lg.shape
    assert not torch.allclose(run(), ref)
    pos = seen['position_ids']; h.remove()
    first = 0 if family == 'bert' else pad + 1
    assert pos[:, :3].tolist() == [[first, first + 1, first + 2]] * 2         # the prompt takes the first positions
    want = pos0 + 3 if family == 'bert' else torch.where(pos0 == pad, pos0, pos0 + 3)   # tokens shifted, RoBERTa pads keep padding_idx
    assert torch.equal(pos[:, 3:], want)
    if family == 'roberta': assert (pos[:, 3:][IDS['attention_mask'] == 0] == pad).all()
    sp.detach(); assert torch.equal(run(), ref)


def test_prompt_lm_frozen_prompt_moves_and_reload(tmp_path, gdir):
    s = spy(DapPrompt); s.params['length'] = 4
    run_continual(s, ['a', 'b'], gdir, tmp_path/'pr', CFG, **KW)
    g = lm(gdir)
    for ck in ('0-a', '1-b'): assert same_lm(g, lm(tmp_path/'pr'/ck))
    init = SoftPrompt(g, 4, seed=CFG.seed).prompt.detach()
    P0, P1 = (load_file(str(tmp_path/'pr'/c/'prompt.safetensors'))['prompt'] for c in ('0-a', '1-b'))
    assert not torch.equal(P0, init) and not torch.equal(P1, P0)
    mm, _ = load_with_plugins(tmp_path/'pr'/'1-b', verbose=False)
    assert enc(mm).shape == enc(g).shape
    torch.testing.assert_close(enc(mm), s.live[1], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- HAT
def test_hat_compensation_and_annealing():
    tm = TaskMasks({'u': (1, 3)}, smax=400.0, lr=0.1); tm.start('x', 5)
    assert tm.s() == pytest.approx(1 / 400)
    e = tm.e['u']
    tm.current()['u'].sum().backward()
    s = tm.s(); raw = e.grad.clone()
    want = raw * 400 / s * (torch.cosh(torch.clamp(s * e.detach(), -50, 50)) + 1) / (torch.cosh(e.detach()) + 1)
    g = {}
    class Stub:                                                             # an optimizer that only reads the gradient
        def step(self): g['grad'] = e.grad.clone()
        def zero_grad(self, set_to_none=True): e.grad = None
    tm.opt = Stub(); tm.update()
    torch.testing.assert_close(g['grad'], want)
    # = 400 * sigmoid'(e): the slope-1 gradient scaled by smax, independent of s
    sig = torch.sigmoid(e.detach())
    torch.testing.assert_close(g['grad'], 400 * sig * (1 - sig))
    tm.step = 4; assert tm.s() == pytest.approx(400)


def test_hat_claimed_units_unchanged_after_next_domain(tmp_path, gdir):
    s = spy(HAT)
    run_continual(s, ['a', 'b'], gdir, tmp_path/'hat', CFG, **KW)
    m0, m1 = lm(tmp_path/'hat'/'0-a'), lm(tmp_path/'hat'/'1-b')
    st0 = load_file(str(tmp_path/'hat'/'0-a'/'hat.safetensors'))
    acc = {k[4:]: v for k, v in st0.items() if k.startswith('acc.')}
    emb_a = {k[5:]: v for k, v in st0.items() if k.startswith('emb0.')}
    for k in acc: torch.testing.assert_close(acc[k], torch.sigmoid(400 * emb_a[k]))   # after domain 1: a = m_1
    p1, name = dict(m1.named_parameters()), {id(p): n for n, p in m0.named_parameters()}
    frozen = moved = 0
    for p, sc in SoftMask(m0, acc).pairs:
        keep, q = (sc == 0).expand_as(p), p1[name[id(p)]]
        assert torch.equal(p.detach()[keep], q.detach()[keep]), name[id(p)]   # claimed by domain a: bit-identical
        frozen += int(keep.sum()); moved += int((p.detach() != q.detach())[~keep].sum())
    assert frozen > 1000 and moved > 1000
    st1 = load_file(str(tmp_path/'hat'/'1-b'/'hat.safetensors'))
    assert torch.equal(st1['emb0.head'], st0['emb0.head'])                   # domain a's task embedding is kept as it was
    for k in acc: assert (st1[f'acc.{k}'] >= acc[k]).all()                   # the accumulated mask only grows
    ha = enc(load_with_plugins(tmp_path/'hat'/'1-b', domain='a', verbose=False)[0])
    hb = enc(load_with_plugins(tmp_path/'hat'/'1-b', domain='b', verbose=False)[0])
    assert not torch.equal(ha, hb)
    torch.testing.assert_close(hb, s.live[1], rtol=0, atol=1e-5)            # domain b's mask = the live one at the end
    meta = load_json(tmp_path/'hat'/'1-b'/'plugin.json')
    assert meta['domains'] == ['a', 'b'] and len(meta['sparsity']) == CFG.steps


def test_hat_resume_equals_uninterrupted(tmp_path, gdir):
    cfg = DapConfig(steps=3, batch_size=4, max_len=16, lr=1e-2)
    run_continual('hat', ['a', 'b'], gdir, tmp_path/'u', cfg, **KW)
    run_continual('hat', ['a', 'b'], gdir, tmp_path/'r', cfg, until=0, **KW)
    run_continual('hat', ['a', 'b'], gdir, tmp_path/'r', cfg, **KW)
    assert same_lm(lm(tmp_path/'u'/'1-b'), lm(tmp_path/'r'/'1-b'))
    U, R = (load_file(str(tmp_path/d/'1-b'/'hat.safetensors')) for d in ('u', 'r'))
    assert all(torch.equal(U[k], R[k]) for k in U)


# ---------------------------------------------------------------- CPT
def test_cpt_claimed_adapter_units_unchanged_lm_frozen(tmp_path, gdir):
    run_continual(make_method('cpt', {'size': 8}), ['a', 'b'], gdir, tmp_path/'cpt', CFG, **KW)
    g = lm(gdir)
    for ck in ('0-a', '1-b'): assert same_lm(g, lm(tmp_path/'cpt'/ck))
    A0, A1 = (load_file(str(tmp_path/'cpt'/c/'adapters.safetensors')) for c in ('0-a', '1-b'))
    H0 = load_file(str(tmp_path/'cpt'/'0-a'/'hat.safetensors'))
    st = AdapterStack(32, 8, 4); st.load_state_dict(A0)
    keys = [f'{i}.{w}' for i in range(4) for w in ('down.weight', 'down.bias', 'up.weight', 'up.bias')]
    frozen = moved = 0
    for (p, sc), k in zip(adapter_block_pairs(st, {'down': H0['acc.down'], 'up': H0['acc.up']}), keys):
        keep = (sc == 0).expand_as(p)
        assert torch.equal(A0[k][keep], A1[k][keep]), k
        frozen += int(keep.sum()); moved += int((A0[k] != A1[k])[~keep].sum())
    assert frozen > 0 and moved > 0
    ha = enc(load_with_plugins(tmp_path/'cpt'/'1-b', domain='a', verbose=False)[0])
    hb = enc(load_with_plugins(tmp_path/'cpt'/'1-b', domain='b', verbose=False)[0])
    assert not torch.equal(ha, hb) and not torch.equal(ha, enc(g))


# ---------------------------------------------------------------- bad input, before any training
@pytest.mark.parametrize('name,params,msg', [
    ('adapter', {'size': 0}, 'positive integer'), ('prompt', {'length': 0}, 'positive integer'),
    ('hat', {'smax': 1}, '> 1'), ('hat', {'smax': 0.5}, '> 1'), ('cpt', {'smax': 1.0}, '> 1'),
    ('cpt', {'size': 0}, 'positive integer'), ('hat', {'c': -1}, '>= 0'), ('hat', {'emb_lr': 0}, '> 0')])
def test_bad_parameters_refused(name, params, msg):
    with pytest.raises(DasError, match=msg): make_method(name, params)


def test_bad_runs_refused_before_training(tmp_path, gdir):
    with pytest.raises(DasError, match='positions'):
        run_continual(make_method('prompt', {'length': 20}), ['a'], gdir, tmp_path/'p', CFG, **KW)
    with pytest.raises(DasError, match='weight_decay 0'):
        run_continual('hat', ['a'], gdir, tmp_path/'h', DapConfig(steps=2, batch_size=4, max_len=16, weight_decay=0.01), **KW)
    assert not (tmp_path/'p').exists() and not (tmp_path/'h').exists()


def test_unseen_or_missing_domain_refused_at_evaluation(tmp_path, gdir):
    run_continual('hat', ['a', 'b'], gdir, tmp_path/'h', DapConfig(steps=2, batch_size=4, max_len=16), until=0, **KW)
    with pytest.raises(DasError, match='not trained'): load_with_plugins(tmp_path/'h'/'0-a', domain='b', verbose=False)
    with pytest.raises(DasError, match='needs a domain ID'): load_with_plugins(tmp_path/'h'/'0-a', verbose=False)
    m, _ = load_with_plugins(tmp_path/'h'/'0-a', domain='a', verbose=False)
    assert m.das_plugin_info == {'plugin': 'hat', 'domain': 'a', 'params': make_method('hat').params}
    m, _ = load_with_plugins(gdir, domain='a', verbose=False)             # a plain model folder: load_mlm's model
    assert same_lm(m, lm(gdir)) and not hasattr(m, 'das_plugin_info')


def test_evaluation_uses_each_tasks_domain_id(tmp_path, gdir):
    "HAT's end tasks are scored with their own domain's mask; untrained domains left out; the rest with the latest."
    from das.evaluate import evaluate_model, toy_task
    run_continual('hat', ['a', 'b'], gdir, tmp_path/'h', DapConfig(steps=2, batch_size=4, max_len=16), **KW)
    tt = {'a': toy_task(seed=1), 'b': toy_task(seed=2), 'probe': toy_task(seed=3)}
    kw = dict(seeds=[0], max_len=16, mlm_max_len=16, task_data=tt, corpus_data={**TOY, 'general': TOY['a'] + TOY['b']})
    r0 = cp.evaluate_with_task_ids(tmp_path/'h'/'0-a', ['a'], ['a', 'b'], ['a', 'b', 'probe'], ['a', 'b', 'general'], **kw)
    assert r0['task_ids'] == {'a': {'tasks': ['a', 'probe'], 'corpora': ['a', 'general']}}
    r1 = cp.evaluate_with_task_ids(tmp_path/'h'/'1-b', ['a', 'b'], ['a', 'b'], ['a', 'b', 'probe'], ['a', 'b', 'general'], **kw)
    assert r1['task_ids'] == {'a': {'tasks': ['a'], 'corpora': ['a']}, 'b': {'tasks': ['b', 'probe'], 'corpora': ['b', 'general']}}
    direct = evaluate_model(*load_with_plugins(tmp_path/'h'/'1-b', domain='a', verbose=False), ['a'], ['a'], **kw)
    assert r1['tasks']['a']['macro_f1'] == direct['tasks']['a']['macro_f1'] and r1['mlm']['a'] == direct['mlm']['a']
    with pytest.raises(DasError, match='no domain trained'): cp.evaluate_with_task_ids(tmp_path/'h'/'0-a', [], ['a'], ['a'], [], **kw)


# ---------------------------------------------------------------- HAT and CPT under AdamW: the update is blocked, exactly
def _fake_run(model):
    from types import SimpleNamespace
    return SimpleNamespace(model=model, accelerator=None, label='b', t=1,
                           cfg=SimpleNamespace(weight_decay=0.0, steps=4, seed=0))


def _hat_step(name, acc_of, attach: bool, v_partial: float):
    "One AdamW step of HAT/CPT with a hand-set accumulated mask; returns (start, after) of the blocked tensors."
    torch.manual_seed(0)
    model = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0).double()
    m = make_method(name, {'size': 8} if name == 'cpt' else {})
    run = _fake_run(model)
    m.before_run(run)
    m.masks.acc = acc_of(m, model, v_partial)
    m.before_domain(run)
    if name == 'cpt': m.stack.double()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    if attach: m.attach_optimizer(opt)
    tensors = ({'q': model.bert.encoder.layer[1].attention.self.query.weight, 'fc': model.bert.encoder.layer[0].intermediate.dense.weight}
               if name == 'hat' else {'up0': m.stack[0].up.weight, 'up1': m.stack[1].up.weight})
    start = {k: t.detach().clone() for k, t in tensors.items()}
    ids = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.where(torch.rand(4, 16, generator=torch.Generator().manual_seed(2)) < 0.3, ids, -100)
    from das.model import mlm_loss
    mlm_loss(model, {'input_ids': ids, 'labels': labels})[0].backward()
    opt.step()
    return start, {k: t.detach().clone() for k, t in tensors.items()}


def _hat_acc(m, model, v):
    from das.gates import unit_shapes
    acc = {k: torch.zeros(s) for k, s in unit_shapes(model).items()}
    acc['head'][1, 2] = v; acc['intermediate'][0, 17] = 1.0
    return acc


def _cpt_acc(m, model, v):
    n, r, d = len(m.stack), 8, model.config.hidden_size
    acc = {'down': torch.zeros(n, r), 'up': torch.zeros(n, d)}
    acc['up'][0, 5] = v; acc['down'][0] = 1.0        # adapter 0: up-projection row 5 scaled by 1 - min(v, 1) = 1 - v
    acc['up'][1] = 1.0; acc['down'][1] = 1.0          # adapter 1 fully claimed
    return acc


@pytest.mark.parametrize('v', [0.5, 0.999])
def test_hat_blocks_the_update_exactly_under_adamw(v):
    s0, free = _hat_step('hat', _hat_acc, False, v)
    s1, masked = _hat_step('hat', _hat_acc, True, v)
    assert torch.equal(s0['q'], s1['q'])
    rows = slice(16, 24)                                                  # head 2 (dh = 8): a = v
    d_free, d_mask = (free['q'] - s0['q'])[rows], (masked['q'] - s0['q'])[rows]
    assert float((d_mask - (1 - v) * d_free).norm() / ((1 - v) * d_free).norm()) < 1e-4   # (a is float32)
    assert torch.equal(masked['fc'][17], s0['fc'][17])                     # a = 1: bit-identical
    other = torch.ones(masked['fc'].shape[0], dtype=torch.bool); other[17] = False
    assert torch.equal(masked['fc'][other], free['fc'][other])             # free units: the unblocked step


@pytest.mark.parametrize('v', [0.5, 0.999])
def test_cpt_blocks_the_adapter_update_exactly_under_adamw(v):
    s0, free = _hat_step('cpt', _cpt_acc, False, v)
    _, masked = _hat_step('cpt', _cpt_acc, True, v)
    d_free, d_mask = (free['up0'] - s0['up0'])[5], (masked['up0'] - s0['up0'])[5]
    assert d_free.norm() > 0
    assert float((d_mask - (1 - v) * d_free).norm() / ((1 - v) * d_free).norm()) < 1e-4
    assert torch.equal(masked['up1'], s0['up1']) and not torch.equal(free['up1'], s0['up1'])   # fully claimed: bit-identical
    assert torch.equal(masked['up0'][:5], free['up0'][:5])                  # free rows: the unblocked step
