"""das.elle: function-preserving growth (width, depth, both; BERT and RoBERTa), recovery, domain prompts, replay, resume, bad input, 2 processes."""
import sys, textwrap
import numpy as np
import pytest, torch
from safetensors.torch import load_file
from das.core import DasError, load_json
from das.continual import make_method, run_continual
from das.cl_plugins import SoftPrompt, load_with_plugins
from das.model import encode, load_mlm, save_mlm, tiny_mlm, tiny_tokenizer
from das.elle import ELLE, PromptBank, amount, check_growth, grow
from launch import launch, run

torch.set_num_threads(1)
TOK = tiny_tokenizer()
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)],
       'c': [' '.join(f'w{60 + (i * 3 + j) % 30}' for j in range(40)) for i in range(50)]}
VOCAB = {d: {TOK.convert_tokens_to_ids(f'w{k}') for k in range(30 * i, 30 * i + 30)} for i, d in enumerate('abc')}
CFG = dict(steps=4, batch_size=4, max_len=16, importance_batches=1, lr=1e-2)
KW = dict(progress=False, corpus=TOY.get)
P = dict(width=8, depth=1, memory=8, replay_batch=2, recovery_steps=3, prompt_len=2)
IDS = TOK(['w1 w2 w3 w4 w5', 'w31 w32 w63'], padding=True, return_tensors='pt')


def enc(m): return encode(m, IDS['input_ids'], IDS['attention_mask'])
def lm(d): return load_mlm(d, verbose=False)[0]
def flat(m): return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.fixture(scope='module')
def gdir(tmp_path_factory):
    return save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0), TOK, tmp_path_factory.mktemp('g')/'general')


class Spy(ELLE):
    "ELLE recording the live model at the end of each domain and the domains it replays."
    name = 'elle'
    def __init__(self, **kw):
        super().__init__(**kw); self.label, self.live, self.replayed, self.grown = 'elle', [], [], []
    def recover(self, run):                                  # called right after a growth
        self.grown.append({k: v.detach().clone() for k, v in run.model.state_dict().items()})
        return super().recover(run)
    def replay_rows(self, step):
        r = super().replay_rows(step); self.replayed.append((self.ctx['t'], r[0], set(r[2][r[2] != -100].tolist())))   # targets
        return r
    def after_domain(self, run):
        with torch.no_grad(): self.live.append(enc(run.model))
        super().after_domain(run)


class Crash(ELLE):
    name = 'elle'
    def after_domain(self, run):
        super().after_domain(run)
        if run.t == 1: raise KeyboardInterrupt


# ---------------------------------------------------------------- growth
@pytest.mark.parametrize('family', ['bert', 'roberta'])
@pytest.mark.parametrize('width,depth', [(8, 0), (0, 1), (16, 2), (64, 3)])
def test_growth_preserves_the_function(family, width, depth):
    m = tiny_mlm(family, vocab_size=100, max_len=32, layers=3, dropout=0.0, seed=1)
    ids, am = torch.randint(5, 100, (3, 12)), torch.ones(3, 12, dtype=torch.long)
    am[1, 7:] = 0
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=am).logits
        big = grow(m, width, depth, seed=3)
        assert (big.config.intermediate_size, big.config.num_hidden_layers) == (64 + width, 3 + depth)
        torch.testing.assert_close(big(input_ids=ids, attention_mask=am).logits, ref, rtol=1e-5, atol=1e-5)
        bigger = grow(big, 8, 1, seed=4)                                   # growth on a grown model: still the same function
        torch.testing.assert_close(bigger(input_ids=ids, attention_mask=am).logits, ref, rtol=1e-5, atol=1e-5)
        sp = SoftPrompt(m, 2).attach(m); ref_p = m(input_ids=ids, attention_mask=am).logits; sp.detach()
        sp2 = SoftPrompt(big, 2).attach(big); sp2.prompt.data.copy_(sp.prompt.data)   # with a prompt too
        torch.testing.assert_close(big(input_ids=ids, attention_mask=am).logits, ref_p, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in m.parameters())


def test_naive_growth_is_not_function_preserving():
    "The check above can fail: a freshly initialized layer or random new neurons change the outputs."
    m = tiny_mlm('bert', vocab_size=100, max_len=32, dropout=0.0)
    ids = torch.randint(5, 100, (2, 10))
    big = grow(m, 0, 1, seed=0)
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        layer = big.bert.encoder.layer[big.das_growth['copied_layers'][0] + 1]
        layer.output.dense.weight.normal_(0, 0.02)                           # what a randomly initialized new layer would add
        assert (big(input_ids=ids).logits - ref).abs().max() > 1e-4


def test_random_split_breaks_the_symmetry_of_copied_neurons():
    "With halves, a copied neuron and its original get the same Adam updates forever; a random split lets them part."
    ids = torch.randint(5, 100, (4, 12)); lab = ids.clone()
    gaps = {}
    for split in ('half', 'random'):
        m = grow(tiny_mlm('bert', vocab_size=100, dropout=0.0), 8, 0, seed=0, split=split).train()
        w0 = m.bert.encoder.layer[0].intermediate.dense.weight
        idx = torch.from_numpy(np.random.default_rng([0, 0]).choice(64, 8, replace=False))
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad(); m(input_ids=ids, labels=lab).loss.backward(); opt.step()
        gaps[split] = float((w0[idx] - w0[64:]).detach().abs().max())
    assert gaps['half'] < 1e-6 < 1e-3 < gaps['random']


def test_bad_growth_and_parameters_refused_before_anything_is_written(tmp_path, gdir):
    m = tiny_mlm('bert', vocab_size=100)                                     # hidden 32, 4 heads: head size 8, FFN 64, 2 layers
    with pytest.raises(DasError, match='multiple of the attention head size 8'): check_growth(m, 12, 0)
    with pytest.raises(DasError, match='exceeds the 64 FFN neurons'): grow(m, 72, 0)
    with pytest.raises(DasError, match='exceeds the 2 layers'): grow(m, 0, 3)
    with pytest.raises(DasError, match='prompt_len=0 must be a positive integer'): make_method('elle', {'prompt_len': 0})
    with pytest.raises(DasError, match='width'): make_method('elle', {'width': -8})
    with pytest.raises(DasError, match='depth'): make_method('elle', {'depth': []})
    with pytest.raises(DasError, match='replay_batch=9 exceeds memory=8'): make_method('elle', {'memory': 8, 'replay_batch': 9})
    out = tmp_path/'out'
    with pytest.raises(DasError, match='head size 8'): run_continual(make_method('elle', {**P, 'width': 12}), ['a', 'b'], gdir, out, CFG, **KW)
    with pytest.raises(DasError, match=r'growth 2 \(before domain 3\): width=80 exceeds the 72'):     # 64 -> 72, then +80 cannot be copied
        run_continual(make_method('elle', {**P, 'width': [8, 80]}), ['a', 'b', 'c'], gdir, out, CFG, **KW)
    with pytest.raises(DasError, match='positions'): run_continual(make_method('elle', {**P, 'prompt_len': 20}), ['a'], gdir, out, CFG, **KW)
    assert not out.exists()
    assert [amount([0, 1], g) for g in range(5)] == [0, 1, 0, 1, 0] and amount(64, 3) == 64


# ---------------------------------------------------------------- the method in the loop
def test_toy_run_grows_trains_new_units_uses_domain_prompts_and_replays_earlier_domains(tmp_path, gdir):
    s = Spy(**P)
    man = run_continual(s, ['a', 'b', 'c'], gdir, tmp_path/'r', CFG, **KW)
    assert man['eval_scope'] == 'task'
    cks = [tmp_path/'r'/c for c in ('0-a', '1-b', '2-c')]
    sizes = [(lm(c).config.intermediate_size, lm(c).config.num_hidden_layers) for c in cks]
    assert sizes == [(64, 2), (72, 3), (80, 4)]                                   # grown as configured
    metas = [load_json(c/'plugin.json') for c in cks]
    assert [m['domains'] for m in metas] == [['a'], ['a', 'b'], ['a', 'b', 'c']] and all(m['task_id'] for m in metas)
    assert metas[0]['growth'] is None and metas[1]['growth']['width'] == 8 and len(metas[1]['recovery_mlm']) == 3
    # the new units train: the grown model at the start of b (exactly grow(checkpoint a)) vs the checkpoint after b
    g1 = grow(lm(cks[0]), 8, 1, seed=1)
    assert all(torch.equal(v, s.grown[0][k]) for k, v in g1.state_dict().items())
    b = lm(cks[1]).state_dict()
    new = g1.das_growth['copied_layers'][0] + 1
    assert b[f'bert.encoder.layer.{new}.output.dense.weight'].abs().sum() > 0     # the inserted layer's zero output moved
    assert not torch.equal(b['bert.encoder.layer.0.intermediate.dense.weight'][64:], g1.state_dict()['bert.encoder.layer.0.intermediate.dense.weight'][64:])
    # the domain prompt: domain a's checkpoint with a's prompt = the live model at the end of a; different domains, different models
    for i, (ck, dom) in enumerate(zip(cks, 'abc')):
        torch.testing.assert_close(enc(load_with_plugins(ck, domain=dom, verbose=False)[0]), s.live[i], rtol=0, atol=1e-6)
    ha, hb = (enc(load_with_plugins(cks[2], domain=d, verbose=False)[0]) for d in 'ab')
    assert not torch.equal(ha, hb)
    with pytest.raises(DasError, match='not trained'): load_with_plugins(cks[1], domain='c', verbose=False)
    with pytest.raises(DasError, match='needs a domain ID'): load_with_plugins(cks[1], verbose=False)
    # replay: only earlier domains, each block's tokens from its own domain; none during the first domain
    assert s.replayed and {t for t, _, _ in s.replayed} == {1, 2}
    for t, dom, toks in s.replayed:
        assert dom in 'abc'[:t], (t, dom)
        assert toks and toks <= VOCAB[dom]
    mem = load_file(str(cks[1]/'elle_memory.safetensors'))
    assert sorted(mem) == ['0.input_ids', '0.special_tokens_mask', '1.input_ids', '1.special_tokens_mask']
    words = set(mem['0.input_ids'].flatten().tolist()) - set(TOK.all_special_ids)
    assert words <= VOCAB['a'] and mem['0.input_ids'].shape == (8, 16)
    from das.continual import domain_blocks
    train_a = np.asarray(domain_blocks(TOK, ('a',), CFG['steps'] * CFG['batch_size'], 16, 0, TOY.get)['input_ids'])
    assert all((train_a == row).all(1).any() for row in mem['0.input_ids'].numpy())   # the memory is text a was trained on

    # an earlier domain's prompt is refined in the recovery warm-up on its memory (and fixed otherwise, below)
    q0, q1 = (load_file(str(c/'elle_prompts.safetensors')) for c in cks[:2])
    assert not torch.equal(q0['prompt.0'], q1['prompt.0'])


def test_no_growth_means_no_recovery_and_fixed_earlier_prompts(tmp_path, gdir):
    run_continual(make_method('elle', {**P, 'width': 0, 'depth': 0}), ['a', 'b'], gdir, tmp_path/'r', CFG, **KW)
    cks = [tmp_path/'r'/c for c in ('0-a', '1-b')]
    assert [(lm(c).config.intermediate_size, lm(c).config.num_hidden_layers) for c in cks] == [(64, 2), (64, 2)]
    meta = load_json(cks[1]/'plugin.json')
    assert meta['growth'] is None and meta['recovery_mlm'] == [] and len(meta['replay_mlm']) == CFG['steps']
    q0, q1 = (load_file(str(c/'elle_prompts.safetensors')) for c in cks)
    assert torch.equal(q0['prompt.0'], q1['prompt.0'])                          # replay uses a's prompt frozen
    assert not torch.equal(lm(cks[0]).bert.encoder.layer[0].output.dense.weight, lm(cks[1]).bert.encoder.layer[0].output.dense.weight)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, gdir):
    run_continual(make_method('elle', P), ['a', 'b', 'c'], gdir, tmp_path/'full', CFG, **KW)
    crash = Crash(**P); crash.label = 'elle'
    with pytest.raises(KeyboardInterrupt): run_continual(crash, ['a', 'b', 'c'], gdir, tmp_path/'part', CFG, **KW)
    assert sorted(p.name for p in (tmp_path/'part').iterdir()) == ['0-a']
    run_continual(make_method('elle', P), ['a', 'b', 'c'], gdir, tmp_path/'part', CFG, **KW)
    a, b = (lm(tmp_path/d/'2-c') for d in ('full', 'part'))
    assert a.config.num_hidden_layers == 4 and torch.equal(flat(a), flat(b))
    pa, pb = (load_file(str(tmp_path/d/'2-c'/'elle_prompts.safetensors')) for d in ('full', 'part'))
    assert sorted(pa) == ['prompt.0', 'prompt.1', 'prompt.2'] and all(torch.equal(pa[k], pb[k]) for k in pa)
    ma, mb = (load_file(str(tmp_path/d/'2-c'/'elle_memory.safetensors')) for d in ('full', 'part'))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_prompt_bank_switches_domains():
    m = tiny_mlm('bert', vocab_size=100, max_len=32)
    bank = PromptBank(2).add('a', m, seed=0).add('b', m, seed=1).attach(m).use('a')
    ha = enc(m)
    with bank.using('b'): hb = enc(m)
    assert not torch.equal(ha, hb) and torch.equal(enc(m), ha)
    n0 = sum(p.numel() for p in m.parameters())
    bank.nest(); assert sum(p.numel() for p in m.parameters()) == n0 + 2 * 2 * 32      # both prompts nested in the LM
    bank.train_only('b')                                                                  # only b's is trained
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == n0 + 2 * 32
    bank.nest(False); assert sum(p.numel() for p in m.parameters()) == n0
    with pytest.raises(DasError, match="'c' has no prompt"): bank.use('c')
    with pytest.raises(DasError, match='positive integer'): PromptBank(0)


WORKER = textwrap.dedent('''
    import sys, torch
    from accelerate import Accelerator
    from das.continual import make_method, run_continual
    torch.set_num_threads(1)
    toy = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
           'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)],
           'c': [' '.join(f'w{60 + (i * 3 + j) % 30}' for j in range(40)) for i in range(50)]}
    m = make_method('elle', dict(width=8, depth=1, memory=8, replay_batch=2, recovery_steps=3, prompt_len=2))
    run_continual(m, ['a', 'b', 'c'], sys.argv[1], sys.argv[2], dict(steps=3, batch_size=4, max_len=16, lr=1e-3),
                  accelerator=Accelerator(cpu=True), progress=False, corpus=toy.get)
''')


def test_two_processes_equal_one(tmp_path):
    "Growth, recovery, replay and prompts under accelerate (DDP): 2 processes = 1 process (dropout off)."
    g = save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0), TOK, tmp_path/'general')
    (tmp_path/'worker.py').write_text(WORKER)
    run([sys.executable, 'worker.py', g, 'one'], tmp_path)
    launch(2, 'worker.py', g, 'two', cwd=tmp_path)
    for ck in ('0-a', '1-b', '2-c'):
        p1, p2 = (lm(tmp_path/r/ck).state_dict() for r in ('one', 'two'))
        for k in p1: torch.testing.assert_close(p2[k], p1[k], atol=1e-4, rtol=1e-4, msg=lambda m: f"{ck} {k}: {m}")
        q1, q2 = (load_file(str(tmp_path/r/ck/'elle_prompts.safetensors')) for r in ('one', 'two'))
        for k in q1: torch.testing.assert_close(q2[k], q1[k], atol=1e-4, rtol=1e-4)
    assert lm(tmp_path/'two'/'2-c').config.num_hidden_layers == 4
