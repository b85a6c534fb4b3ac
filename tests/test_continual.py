"""das.continual: the one loop, its methods, checkpoints, resume, bad input, and 2 processes = 1 process."""
import sys, textwrap
from pathlib import Path
import pytest, torch
from das.core import DasError, load_json
from das.continual import DAS, DapConfig, Method, make_method, run_continual, smoke_model_dir
from das.importance import load_importance, save_importance, random_importance
from das.gates import unit_shapes
from das.model import load_mlm, save_mlm, tiny_mlm, tiny_tokenizer
from launch import launch, run
torch.set_num_threads(1)
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
TOY['general'] = TOY['a'][:25] + TOY['b'][:25]
CFG = dict(steps=3, batch_size=4, max_len=16, importance_batches=1)


def flat(m): return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.fixture(scope='module')
def gdir(tmp_path_factory):
    return save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0), tiny_tokenizer(), tmp_path_factory.mktemp('g')/'general')


def test_smoke_profile_real_data(tmp_path):
    "The smoke profile: the real corpora, a tiny model with the base tokenizer, the default methods."
    sm = smoke_model_dir(tmp_path/'smoke')
    cfg = dict(steps=2, batch_size=4, max_len=32, importance_batches=1)
    for m in ('base', 'one', 'ncl', 'das'):
        man = run_continual(m, ['movie', 'drug'], sm, tmp_path/m, cfg, general_importance=tmp_path/'imp.pt', progress=False)
        assert [c['label'] for c in man['checkpoints']] == ['movie', 'drug']
    assert load_importance(tmp_path/'das'/'1-drug'/'importance_accumulated.pt', with_meta=True)[1]['domains'] == ['general', 'movie', 'drug']


def test_bad_input_refused_before_training(tmp_path, gdir):
    out = tmp_path/'out'
    with pytest.raises(DasError, match='unknown method'): run_continual('dass', ['movie'], gdir, out, CFG)
    with pytest.raises(DasError, match="unknown domain 'cooking'"): run_continual('ncl', ['movie', 'cooking'], gdir, out, CFG)
    with pytest.raises(DasError, match='appears twice'): run_continual('ncl', ['movie', 'drug', 'movie'], gdir, out, CFG)
    with pytest.raises(DasError, match='steps=0'): run_continual('ncl', ['movie'], gdir, out, {**CFG, 'steps': 0})
    with pytest.raises(DasError, match='no corpus'): run_continual('ncl', ['trec'], gdir, out, CFG)
    other = save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, layers=3), tiny_tokenizer(), tmp_path/'other')
    m3 = load_mlm(other, verbose=False)[0]
    save_importance(random_importance(unit_shapes(m3)), tmp_path/'imp3.pt', {'domains': ['general']}, m3)
    with pytest.raises(DasError, match='another model'):
        run_continual('das', ['a'], gdir, out, CFG, general_importance=tmp_path/'imp3.pt', corpus=TOY.get)
    with pytest.raises(DasError, match='has no parameter'): make_method('ewc_typo', {'method': 'ncl', 'lamb': 1})
    assert not out.exists()


class Crash(DAS):
    "DAS that dies after training the second domain, before its checkpoint is written."
    name = 'crash'
    def after_domain(self, run):
        super().after_domain(run)
        if run.t == 1: raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_result(tmp_path, gdir):
    full = run_continual('das', ['a', 'b'], gdir, tmp_path/'full', CFG, progress=False, corpus=TOY.get)
    crash = Crash(); crash.label = 'das'; crash.name = 'das'
    with pytest.raises(KeyboardInterrupt):
        run_continual(crash, ['a', 'b'], gdir, tmp_path/'part', CFG, progress=False, corpus=TOY.get)
    assert sorted(p.name for p in (tmp_path/'part').iterdir()) == ['0-a']      # nothing half-written
    run_continual('das', ['a', 'b'], gdir, tmp_path/'part', CFG, progress=False, corpus=TOY.get)
    a, b = (load_mlm(tmp_path/d/'1-b', verbose=False)[0] for d in ('full', 'part'))
    assert torch.equal(flat(a), flat(b))
    ia, ib = (load_importance(tmp_path/d/'1-b'/'importance_accumulated.pt') for d in ('full', 'part'))
    assert all(torch.equal(ia[k], ib[k]) for k in ia)
    assert len(full['checkpoints']) == 2


WORKER = textwrap.dedent('''
    import sys, torch
    from accelerate import Accelerator
    from das.model import load_mlm
    from das.continual import make_method, run_continual
    torch.set_num_threads(1)
    toy = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
           'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
    acc = Accelerator(cpu=True)
    out = sys.argv[2]
    method = make_method('das_noinit', {'method': 'das', 'init': False})
    run_continual(method, ['a', 'b'], sys.argv[1], out, dict(steps=2, batch_size=4, max_len=16, importance_batches=2, lr=1e-3),
                  accelerator=acc, progress=False, corpus=toy.get)
''')


def test_loop_two_processes_equal_one(tmp_path):
    "The whole loop (DAS without the dropout-based general importance) under accelerate: 2 processes = 1 process."
    g = save_mlm(tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0), tiny_tokenizer(), tmp_path/'general')
    # DAS with init=False: its importance is the MLM loss with dropout off, so 1 and 2 processes can agree exactly
    (tmp_path/'worker.py').write_text(WORKER)
    run([sys.executable, 'worker.py', g, 'one'], tmp_path)
    launch(2, 'worker.py', g, 'two', cwd=tmp_path)
    for ck in ('0-a', '1-b'):
        p1, p2 = (load_mlm(tmp_path/r/ck, verbose=False)[0].state_dict() for r in ('one', 'two'))
        for k in p1: torch.testing.assert_close(p2[k], p1[k], atol=1e-5, rtol=1e-5, msg=lambda m: f"{ck} {k}: {m}")
        i1, i2 = (load_importance(tmp_path/r/ck/'importance_accumulated.pt') for r in ('one', 'two'))
        for k in i1: torch.testing.assert_close(i2[k], i1[k], atol=1e-4, rtol=1e-4)
    assert load_json(tmp_path/'two'/'1-b'/'history.json')['config']['processes'] == 2


MP_WORKER = textwrap.dedent('''
    import sys, torch
    from accelerate import Accelerator
    from das.continual import run_continual
    torch.set_num_threads(1)
    toy = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
           'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
    toy['general'] = toy['a'][:25] + toy['b'][:25]
    acc = Accelerator(cpu=True)
    assert acc.mixed_precision == 'bf16', acc.mixed_precision
    run_continual('das', ['a', 'b'], sys.argv[1], sys.argv[2], dict(steps=2, batch_size=4, max_len=16, importance_batches=1),
                  accelerator=acc, progress=False, corpus=toy.get)
''')


def test_mixed_precision_is_a_switch(tmp_path, gdir):
    "The same loop under `accelerate launch --mixed_precision bf16` (autocast on CPU): no code change."
    (tmp_path/'worker.py').write_text(MP_WORKER)
    launch(1, 'worker.py', gdir, 'mp', cwd=tmp_path, mixed_precision='bf16')
    man = load_json(tmp_path/'mp'/'run.json')
    assert [c['label'] for c in man['checkpoints']] == ['a', 'b']
    m = load_mlm(tmp_path/'mp'/'1-b', verbose=False)[0]
    assert all(p.dtype == torch.float32 for p in m.parameters())           # weights stay fp32; only compute is bf16


def grow_ffn(model, k: int, seed: int = 0):
    "A copy of `model` with k more FFN neurons per layer; their output weights are 0, so it computes the same."
    cfg = model.config.__class__.from_dict({**model.config.to_dict(), 'intermediate_size': model.config.intermediate_size + k})
    big = type(model)(cfg)
    sd = {n: p.clone() for n, p in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    for n, p in big.state_dict().items():
        q = sd[n]
        if q.shape != p.shape:                    # intermediate rows (new: random) or output columns (new: zero)
            new = torch.zeros_like(p)
            if n.endswith('intermediate.dense.weight'): new = torch.randn(p.shape, generator=g) * 0.02
            new[tuple(slice(0, s) for s in q.shape)] = q
            sd[n] = new
    big.load_state_dict(sd)
    return big


class Grow(Method):
    "A method that grows the FFN before every domain after the first: the loop must train the new model."
    name = 'grow'
    def before_domain(self, run):
        if run.t > 0: run.model = grow_ffn(run.model, 8, seed=run.t)


class GrowCrash(Grow):
    def after_domain(self, run):
        if run.t == 1: raise KeyboardInterrupt


def test_a_method_may_replace_the_model_and_a_grown_run_resumes(tmp_path, gdir):
    m = load_mlm(gdir, verbose=False, dropout=0.0)[0].eval()
    ids = torch.randint(5, 100, (2, 12))
    torch.testing.assert_close(grow_ffn(m, 8).eval()(input_ids=ids).logits, m(input_ids=ids).logits)   # the toy growth is exact
    cfg = {**CFG, 'lr': 1e-3}
    g = Grow(); g.label = 'grow'
    run_continual(g, ['a', 'b', 'a2'], gdir, tmp_path/'full', cfg, progress=False, corpus={**TOY, 'a2': TOY['a']}.get)
    sizes = [load_mlm(tmp_path/'full'/c, verbose=False)[0].config.intermediate_size for c in ('0-a', '1-b', '2-a2')]
    assert sizes == [64, 72, 80]
    b0, b1 = (load_mlm(tmp_path/'full'/c, verbose=False)[0] for c in ('0-a', '1-b'))
    assert not torch.equal(b1.bert.encoder.layer[0].output.dense.weight[:, 64:], torch.zeros(32, 8))   # the new neurons trained
    crash = GrowCrash(); crash.label = 'grow'; crash.name = 'grow'
    with pytest.raises(KeyboardInterrupt):
        run_continual(crash, ['a', 'b', 'a2'], gdir, tmp_path/'part', cfg, progress=False, corpus={**TOY, 'a2': TOY['a']}.get)
    g2 = Grow(); g2.label = 'grow'
    run_continual(g2, ['a', 'b', 'a2'], gdir, tmp_path/'part', cfg, progress=False, corpus={**TOY, 'a2': TOY['a']}.get)
    a, b = (load_mlm(tmp_path/d/'2-a2', verbose=False)[0] for d in ('full', 'part'))
    assert torch.equal(flat(a), flat(b))


def test_training_notebook_with_a_launcher_runs_the_loop_in_two_processes(tmp_path):
    "09b_train with `launcher`: the spec goes to `python -m das.continual` under accelerate (2 gloo processes here)."
    from launch import ACCELERATE, ROOT, free_port, run
    launcher = f'{ACCELERATE} launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port {free_port()}'
    run([sys.executable, '-m', 'papermill', '--log-level', 'ERROR', ROOT/'nbs'/'09b_train.ipynb', tmp_path/'out.ipynb', '-p', 'method', 'ncl',
         '-p', 'runs_dir', tmp_path/'runs', '-p', 'metrics_dir', tmp_path/'metrics', '-p', 'launcher', launcher, '-p', 'num_threads', 1], ROOT)
    man = load_json(tmp_path/'runs'/'ncl'/'run.json')
    assert [c['label'] for c in man['checkpoints']] == ['movie', 'computing']
    assert (tmp_path/'runs'/'ncl'/'1-computing'/'model.safetensors').exists() and (tmp_path/'metrics'/'ncl.json').exists()
