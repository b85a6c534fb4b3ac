"""das.baselines: EWC, KD and DER++ as plugins of the continual loop, on a tiny model and two toy domains."""
import copy, math
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest, torch
from safetensors.torch import load_file
from das.core import DasError, load_json
from das.continual import DapConfig, make_method, run_continual
from das.baselines import DERPP, EWC, KD, Reservoir, anchors, diag_fisher, frozen_copy, kd_loss
from das.dap import block_loader
from das.continual import domain_blocks
from das.model import encode, encoder_of, load_mlm, save_mlm, tiny_mlm, tiny_tokenizer

torch.set_num_threads(1)
TOK = tiny_tokenizer()
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
CFG = DapConfig(steps=4, batch_size=4, max_len=16, importance_batches=1)
KW = dict(progress=False, corpus=TOY.get)


def flat(m): return torch.cat([p.detach().flatten() for p in m.parameters()])
def model_(): return tiny_mlm('bert', vocab_size=100, max_len=32, seed=0)
def batch_(domain='a', n=4, seed=0):
    return next(iter(block_loader(domain_blocks(TOK, domain, n, 16, corpus=TOY.get), TOK.mask_token_id, 100, n, n, seed)))
def fake_run(t=1): return SimpleNamespace(t=t, cfg=CFG, accelerator=SimpleNamespace(process_index=0))
def perturb(m, s=0.01):
    with torch.no_grad():
        for p in m.parameters(): p.add_(s * torch.randn_like(p))


@pytest.fixture(scope='module')
def gdir(tmp_path_factory):
    return save_mlm(model_(), TOK, tmp_path_factory.mktemp('g')/'general')


# ---------------------------------------------------------------- EWC
def test_ewc_penalty_zero_at_anchor_and_gradient_is_spring_force():
    torch.manual_seed(0)
    m = model_()
    fis = diag_fisher(m, [batch_()])
    e = make_method('ewc', {'lamb': 7.0}); e.before_run(None)
    assert e.penalty(m).item() == 0.0                        # before the first domain ends: a zero tensor, no None
    e.fisher, e.anchor = fis, anchors(m)
    assert e.penalty(m).item() == 0.0                        # at theta*
    m2 = copy.deepcopy(m); perturb(m2)
    pen = e.penalty(m2); pen.backward()
    named = dict(encoder_of(m2).named_parameters())
    want = sum(float((fis[k] * (named[k].detach() - e.anchor[k]) ** 2).sum()) for k in fis) * 7.0 / 2
    assert math.isclose(pen.item(), want, rel_tol=1e-5)
    for k in fis: torch.testing.assert_close(named[k].grad, 7.0 * fis[k] * (named[k].detach() - e.anchor[k]), rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for n, p in m2.named_parameters() if n.startswith('cls.predictions.transform'))   # head not penalized


def test_ewc_huge_lamb_holds_high_fisher_weights(tmp_path, gdir):
    cfg = DapConfig(steps=8, batch_size=4, max_len=16, importance_batches=1, lr=1e-3)
    run_continual('ncl', ['a', 'b'], gdir, tmp_path/'ncl', cfg, **KW)
    run_continual(make_method('ewc', {'lamb': 1e9}), ['a', 'b'], gdir, tmp_path/'ewc', cfg, **KW)
    F = load_file(str(tmp_path/'ewc'/'0-a'/'ewc_fisher.safetensors'))
    enc = lambda d: anchors(load_mlm(d, verbose=False)[0])
    fl = lambda a, b: torch.cat([(b[k] - a[k]).abs().flatten() for k in F])
    Fall = torch.cat([v.flatten() for v in F.values()]); top = Fall >= Fall.quantile(0.95)
    d_ewc = fl(enc(tmp_path/'ewc'/'0-a'), enc(tmp_path/'ewc'/'1-b'))[top].mean()
    d_ncl = fl(enc(tmp_path/'ncl'/'0-a'), enc(tmp_path/'ncl'/'1-b'))[top].mean()
    assert d_ewc < 0.5 * d_ncl, (d_ewc, d_ncl)
    assert torch.equal(flat(load_mlm(tmp_path/'ewc'/'0-a', verbose=False)[0]), flat(load_mlm(tmp_path/'ncl'/'0-a', verbose=False)[0]))
    assert load_json(tmp_path/'ewc'/'0-a'/'ewc.json')['penalty'] == [0.0] * 8


def test_ewc_state_round_trip_online_and_resume(tmp_path, gdir):
    run_continual(make_method('ewc', {'gamma': 0.5}), ['a', 'b'], gdir, tmp_path/'u', CFG, **KW)
    Fa = load_file(str(tmp_path/'u'/'0-a'/'ewc_fisher.safetensors'))
    Fb = load_file(str(tmp_path/'u'/'1-b'/'ewc_fisher.safetensors'))
    ma, mb = load_mlm(tmp_path/'u'/'0-a', verbose=False)[0], load_mlm(tmp_path/'u'/'1-b', verbose=False)[0]
    e = make_method('ewc', {'gamma': 0.5}); e.before_run(None)
    e.load_state(tmp_path/'u'/'0-a', SimpleNamespace(model=ma))
    for k in Fa: assert torch.equal(e.fisher[k], Fa[k])
    e.after_domain(SimpleNamespace(model=mb, sample_loader=lambda d: block_loader(
        domain_blocks(TOK, d, 4, 16, CFG.seed + 1000, TOY.get), TOK.mask_token_id, 100, 4, 4, CFG.seed + 1000), domains=('b',),
        accelerator=None, label='b'))
    for k in Fa: torch.testing.assert_close(e.fisher[k], Fb[k])                                    # F <- 0.5 F_a + F_b
    assert e.parts == ['a', 'b']
    with pytest.raises(DasError, match='other weights'): e.load_state(tmp_path/'u'/'0-a', SimpleNamespace(model=mb))
    run_continual(make_method('ewc', {'gamma': 0.5}), ['a', 'b'], gdir, tmp_path/'r', CFG, until=0, **KW)
    run_continual(make_method('ewc', {'gamma': 0.5}), ['a', 'b'], gdir, tmp_path/'r', CFG, **KW)
    assert torch.equal(flat(load_mlm(tmp_path/'r'/'1-b', verbose=False)[0]), flat(mb))           # resumed = uninterrupted


# ---------------------------------------------------------------- KD
def test_kd_zero_for_equal_student_positive_after_move():
    m, b = model_().eval(), batch_()
    kd = make_method('kd', {'temperature': 3.0, 'weight': 2.0}); kd.before_run(None); kd.teacher = frozen_copy(m)
    assert kd.distill(m, b, encode(m, b['input_ids'], b['attention_mask'])).item() == pytest.approx(0.0, abs=1e-6)
    perturb(m, 0.05)
    l = kd.distill(m, b, encode(m, b['input_ids'], b['attention_mask'])); l.backward()
    assert l.item() > 1e-3
    assert all(p.grad is None and not p.requires_grad for p in kd.teacher.parameters())
    # T^2 KL(p_t || p_s) with a hand-computed case
    s, t = torch.tensor([[0., 0.]]), torch.tensor([[2 * math.log(3.), 0.]])
    assert kd_loss(s, t, 2.0).item() == pytest.approx(4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), rel=1e-5)


def test_kd_teacher_absent_on_domain1_frozen_on_domain2(tmp_path, gdir):
    class Spy(KD):
        name = 'spy_kd_test'
        def before_domain(self, run):
            super().before_domain(run); self.start.append(None if self.teacher is None else flat(self.teacher))
            self.mode.append(None if self.teacher is None else self.teacher.training)
        def after_domain(self, run):
            self.end.append(None if self.teacher is None else flat(self.teacher)); super().after_domain(run)
    spy = Spy(); spy.start, spy.end, spy.mode = [], [], []
    run_continual(spy, ['a', 'b'], gdir, tmp_path/'kd', CFG, **KW)
    ka, kb = flat(load_mlm(tmp_path/'kd'/'0-a', verbose=False)[0]), flat(load_mlm(tmp_path/'kd'/'1-b', verbose=False)[0])
    assert spy.start[0] is None and spy.end[0] is None
    assert torch.equal(spy.start[1], ka) and torch.equal(spy.end[1], ka) and spy.mode[1] is False
    assert not torch.equal(kb, ka) and spy.teacher is None
    assert load_json(tmp_path/'kd'/'0-a'/'kd.json')['kd'] == []
    log = load_json(tmp_path/'kd'/'1-b'/'kd.json')['kd']
    assert len(log) == CFG.steps and log[-1] > 0


# ---------------------------------------------------------------- DER++
def test_reservoir_bounded_and_uniform():
    N, size, trials = 60, 6, 2000
    held = np.zeros(N, int)
    for s in range(trials):
        r = Reservoir(size, seed=s)
        for chunk in np.array_split(np.arange(N), 7): r.add(chunk.tolist())     # batches of varying size
        assert len(r) == size and len(set(r.items)) == size and r.n_seen == N
        held[r.items] += 1
    exp, sd = trials * size / N, math.sqrt(trials * 0.1 * 0.9)
    assert abs(held - exp).max() < 5 * sd
    assert ((held - exp) ** 2 / exp).sum() < 110                               # chi2 with 59 dof: mean 59
    r = Reservoir(5, seed=1); r.add(list(range(5)))
    picked = np.bincount([r.sample(1)[0] for _ in range(4000)], minlength=5)
    assert abs(picked - 800).max() < 5 * math.sqrt(4000 * 0.2 * 0.8)
    assert sorted(r.sample(10)) == list(range(5))                               # more than held: all, no repeats
    with pytest.raises(DasError, match='size=0'): Reservoir(0)


def test_derpp_mse_zero_when_logits_unchanged():
    m, run = model_().eval(), fake_run()
    d = make_method('derpp', {'buffer_size': 6, 'replay_batch': 3}); d.before_run(run); d.before_domain(run)
    for s in range(3):
        b = batch_(seed=s); d.observe(m, b, encode(m, b['input_ids'], b['attention_mask']))
    assert len(d.buffer) == 6 and d.buffer.n_seen == 12
    mse, ce = d.replay_terms(m, d.buffer.sample(3))
    assert mse.item() < 1e-5 and ce.item() > 0                                   # float16 rounding only
    perturb(m, 0.05)
    assert d.replay_terms(m, d.buffer.sample(3))[0].item() > 1e-3


def test_derpp_two_domains_no_replay_on_first_and_state_round_trip(tmp_path, gdir):
    run_continual('derpp', ['a', 'b'], gdir, tmp_path/'u', CFG, **KW)           # the reference code's DER++ fails here
    ja, jb = load_json(tmp_path/'u'/'0-a'/'derpp.json'), load_json(tmp_path/'u'/'1-b'/'derpp.json')
    assert ja['replay_mse_ce'] == [] and len(jb['replay_mse_ce']) == CFG.steps
    assert (ja['rows'], jb['rows'], jb['reservoir']['n_seen']) == (16, 32, 32)
    buf = load_file(str(tmp_path/'u'/'1-b'/'derpp_buffer.safetensors'))
    assert buf['logits'].dtype == torch.float16 and buf['logits'].shape == (int(buf['n_masked'].sum()), 100)
    d = make_method('derpp'); run = fake_run(); d.before_run(run); d.load_state(tmp_path/'u'/'1-b', run)
    assert torch.equal(torch.cat([r['logits'] for r in d.buffer.items]), buf['logits'])
    assert torch.equal(torch.stack([r['input_ids'] for r in d.buffer.items]), buf['input_ids'])
    assert d.buffer.state() == jb['reservoir']
    run_continual('derpp', ['a', 'b'], gdir, tmp_path/'r', CFG, until=0, **KW)
    run_continual('derpp', ['a', 'b'], gdir, tmp_path/'r', CFG, **KW)
    assert torch.equal(flat(load_mlm(tmp_path/'r'/'1-b', verbose=False)[0]), flat(load_mlm(tmp_path/'u'/'1-b', verbose=False)[0]))


# ---------------------------------------------------------------- bad parameters
@pytest.mark.parametrize('name,params,msg', [
    ('ewc', {'lamb': -1}, 'lamb=-1'), ('ewc', {'gamma': 2}, 'gamma=2'), ('ewc', {'lamb': 'big'}, "lamb='big'"),
    ('kd', {'temperature': 0}, 'temperature=0'), ('kd', {'weight': -0.5}, 'weight=-0.5'),
    ('derpp', {'buffer_size': 0}, 'buffer_size=0'), ('derpp', {'replay_batch': 65}, 'exceeds buffer_size=64'),
    ('derpp', {'alpha': -1}, 'alpha=-1'), ('derpp', {'buffer': 8}, "no parameter(s) ['buffer']")])
def test_bad_parameters_refused_before_training(tmp_path, gdir, name, params, msg):
    with pytest.raises(DasError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        run_continual(make_method(name, params), ['a'], gdir, tmp_path/'out', CFG, **KW)
    assert not (tmp_path/'out').exists()
