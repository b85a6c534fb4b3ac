"""Decoders (Llama with grouped-query attention, Qwen2 with q/k/v biases, Mistral, GPT-2 with Conv1D): the soft-mask's
slices, importance with hook dropout, a Trainer equal to our loop, training and evaluation through the one loop, and bad
input refused before any step. Tiny random models of each family (das.family.tiny_lm)."""
import copy, json, tempfile
from pathlib import Path
import pytest, torch
from das.core import DasError
from das.family import tiny_lm, unit_shapes, unit_slices, kv_heads, head_dim
from das.importance import compute_importance, save_importance, load_importance, random_importance
from das.model import chunk_texts, mlm_loss, save_mlm, tiny_mlm, tiny_tokenizer, load_lm
from das.softmask import SoftMask, SoftMaskCallback
torch.set_num_threads(1)
FAMS = ['llama', 'qwen2', 'mistral', 'gpt2']
OPTS = {'adamw': lambda ps, wd: torch.optim.AdamW(ps, lr=1e-2, weight_decay=wd),
        'sgd_momentum': lambda ps, wd: torch.optim.SGD(ps, lr=0.5, momentum=0.9, weight_decay=wd)}
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
TOY['general'] = TOY['a'][:25] + TOY['b'][:25]


def batches(n, B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (B, T), generator=g)
        out.append({'input_ids': ids, 'labels': ids.clone(), 'attention_mask': torch.ones_like(ids)})
    return out


def train(m0, opt_name, steps, imp=None, grads=None, wd=0.0):
    m = copy.deepcopy(m0); m.train(); opt = OPTS[opt_name](m.parameters(), wd)
    sm = None if imp is None else SoftMask(m, imp).attach(opt)
    used = []
    for i, b in enumerate(batches(steps, seed=5)):
        if grads is None:
            mlm_loss(m, b)[0].backward(); used.append([None if p.grad is None else p.grad.clone() for p in m.parameters()])
        else:
            for p, g in zip(m.parameters(), grads[i]): p.grad = None if g is None else g.clone()
        opt.step(); opt.zero_grad(set_to_none=True)
    if sm is not None: sm.detach()
    return {n: p.detach().clone() for n, p in m.named_parameters()}, used


def slice_masks(m0, kind):
    "{param name: bool mask} of the slices of every unit of `kind` (k/v rows included)."
    names = {id(p): n for n, p in m0.named_parameters()}
    out = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in m0.named_parameters()}
    for p, s in unit_slices(m0, {kind: torch.zeros(unit_shapes(m0)[kind])}):
        out[names[id(p)]] |= torch.broadcast_to(s == 0, p.shape)
    return out


@pytest.mark.parametrize('fam', FAMS)
@pytest.mark.parametrize('opt_name', list(OPTS))
@pytest.mark.parametrize('kind', ['head', 'intermediate', 'output'])
def test_update_mask_scales_each_kind_by_one_minus_importance(fam, opt_name, kind):
    "Importance v on every unit of one kind: its slices (shared k/v rows included) move (1 - v) x their unmasked change."
    m0 = tiny_lm(fam, dropout=0.0).double()
    free, grads = train(m0, opt_name, 3)
    start = {n: p.detach().clone() for n, p in m0.named_parameters()}
    sel = slice_masks(m0, kind)
    assert sum(int(s.sum()) for s in sel.values()) > 0
    if fam != 'gpt2' and kind == 'head':
        for w in ('k_proj', 'v_proj'): assert sel[f'model.layers.0.self_attn.{w}.weight'].all()   # GQA: every k/v row is a slice
    for v in (0.0, 0.5, 0.9, 1.0):
        masked, _ = train(m0, opt_name, 3, {kind: torch.full(unit_shapes(m0)[kind], v, dtype=torch.float64)}, grads=grads)
        for n in free:
            s = sel[n]
            assert torch.equal(masked[n][~s], free[n][~s]), (n, v)          # everything else follows the unmasked run exactly
            if not s.any(): continue
            if v == 1.0: assert torch.equal(masked[n][s], start[n][s]), (n, v)   # frozen, bit for bit
            elif v == 0.0: assert torch.equal(masked[n][s], free[n][s]), (n, v)
            else:
                d_m, d_f = (masked[n] - start[n])[s], (free[n] - start[n])[s]
                assert d_f.norm() > 0, n
                err = float((d_m - (1 - v) * d_f).norm() / ((1 - v) * d_f).norm())
                assert err <= 1e-4, (fam, opt_name, kind, n, v, err)


def test_shared_key_value_rows_take_their_most_important_reader():
    m = tiny_lm('llama')                     # 4 query heads over 2 key-value heads of width 16
    assert (kv_heads(m), head_dim(m)) == (2, 16)
    imp = {'head': torch.zeros(2, 4)}; imp['head'][0] = torch.tensor([0.2, 0.7, 0.1, 0.4])
    sc = {id(p): s for p, s in unit_slices(m, {'head': 1 - imp['head']})}
    k = sc[id(m.model.layers[0].self_attn.k_proj.weight)].flatten()
    assert torch.allclose(k, torch.tensor([0.3] * 16 + [0.6] * 16))     # 1 - max(0.2, 0.7), 1 - max(0.1, 0.4)
    q = sc[id(m.model.layers[0].self_attn.q_proj.weight)].flatten()
    assert torch.allclose(q, (1 - imp['head'][0]).repeat_interleave(16))


@pytest.mark.parametrize('fam', FAMS)
def test_importance_on_decoders(fam):
    m = tiny_lm(fam)
    bs = batches(2)
    kl = compute_importance(m, bs, loss='kl', n_positions=None)
    assert all(v.shape == unit_shapes(m)[k] and (v > 0).any() and (v < 1).all() for k, v in kl.items())
    raw = compute_importance(m, bs, loss='lm', normalized=False)
    assert all((v > 0).any() for v in raw.values())
    with pytest.raises(DasError, match='no masked-LM loss'): compute_importance(m, bs, loss='mlm')


def test_proxy_kl_needs_two_different_views():
    "The Llama family has no dropout: without hook dropout the two views are identical, and that is refused."
    m = tiny_lm('llama')
    with pytest.raises(DasError, match='identical'): compute_importance(m, batches(1), loss='kl', hook_dropout=0.0)
    assert all((v > 0).any() for v in compute_importance(m, batches(1), loss='kl', normalized=False).values())   # default: 0.1 at the hooks
    g = tiny_lm('gpt2', dropout=0.0)                                     # GPT-2 with its dropout set to 0: refused as well
    with pytest.raises(DasError, match='identical'): compute_importance(g, batches(1), loss='kl')


def test_trainer_with_callback_equals_our_loop_on_a_decoder():
    from transformers import Trainer, TrainingArguments
    from das.dap import block_loader, train_domain
    tok = tiny_tokenizer(100)
    blocks = chunk_texts(tok, TOY['a'], max_len=16, causal=True)
    m0 = tiny_lm('llama', seed=0)
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(1)) for k, s in unit_shapes(m0).items()}
    imp['head'][0, 1] = 1.0; imp['head'][0, 0] = 1.0                     # key-value head 0 of layer 0: both readers at 1
    steps, bs, lr, seed = 5, 4, 1e-3, 7
    ours = copy.deepcopy(m0)
    train_domain(ours, tok, blocks, importance=imp, contrast=False, steps=steps, batch_size=bs, lr=lr, warmup_ratio=0.0,
                 seed=seed, progress=False)
    rows = [{k: b[k][i] for k in ('input_ids', 'attention_mask', 'labels')}
            for b in block_loader(blocks, None, 100, steps * bs, bs, seed, causal=True) for i in range(bs)]

    class Rows(torch.utils.data.IterableDataset):
        def __iter__(self): return iter(rows)

    theirs = copy.deepcopy(m0)
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(d, max_steps=steps, per_device_train_batch_size=bs, learning_rate=lr, lr_scheduler_type='linear',
                                 warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, optim='adamw_torch', report_to=[],
                                 save_strategy='no', logging_strategy='no', use_cpu=True, disable_tqdm=True, seed=seed)
        Trainer(model=theirs, args=args, train_dataset=Rows(), callbacks=[SoftMaskCallback(imp)]).train()
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=lambda s: f'{n}: {s}')
    a0, moved = m0.model.layers[0].self_attn, False
    for m in (ours, theirs):
        a = m.model.layers[0].self_attn
        assert torch.equal(a.q_proj.weight[:32], a0.q_proj.weight[:32]) and torch.equal(a.k_proj.weight[:16], a0.k_proj.weight[:16])
        moved = not torch.equal(a.q_proj.weight[32:], a0.q_proj.weight[32:])
        assert moved


def test_the_loop_trains_and_evaluates_a_decoder(tmp_path):
    from das.continual import make_method, method_params_of, run_continual
    from das.evaluate import evaluate_model, knowledge, toy_task
    g = save_mlm(tiny_lm('llama'), tiny_tokenizer(), tmp_path/'general')
    cfg = dict(steps=3, batch_size=4, max_len=16, importance_batches=1)
    rows = {}
    for m in ('base', 'ncl', 'das', 'das_gradmask', 'replay', 'kd', 'ewc', 'derpp'):
        man = run_continual(make_method(m, method_params_of(m)), ['a', 'b'], g, tmp_path/m, cfg, general_importance=tmp_path/'imp.pt',
                            progress=False, corpus=TOY.get)
        rows[m] = [evaluate_model(load_lm(c['model'], verbose=False)[0], tiny_tokenizer(), tasks=['toy'], corpora=['general', 'a', 'b'],
                                  seeds=(0,), task_data={'toy': toy_task()}, corpus_data=TOY, mlm_seeds=(0, 1), mlm_max_len=16)
                   for c in man['checkpoints']]
    imp, meta = load_importance(tmp_path/'das'/'1-b'/'importance_accumulated.pt', with_meta=True)
    assert meta['domains'] == ['general', 'a', 'b'] and imp['head'].shape == (2, 4)
    h = json.loads((tmp_path/'das'/'1-b'/'history.json').read_text())
    assert h['config']['causal'] and h['config']['hook_dropout'] == 0.1 and all(c is not None and c > 0 for c in h['contrast'])
    k = knowledge(rows['ncl'], rows['base'][0], ['a', 'b'])
    assert k and all(abs(v['se']) < 1 for v in k.values() if isinstance(v, dict) and 'se' in v)


def test_bad_input_refused_before_any_step(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration
    from das.continual import run_continual
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    for f in (lambda: SoftMask(t5, {'head': torch.zeros(1, 2)}), lambda: compute_importance(t5, batches(1)),
              lambda: unit_shapes(t5)):
        with pytest.raises(DasError, match='not a supported architecture'): f()
    m, b = tiny_lm('llama'), tiny_mlm('bert')
    with pytest.raises(DasError, match='the model needs'): SoftMask(m, {k: torch.zeros(s) for k, s in unit_shapes(b).items()})
    save_importance(random_importance(unit_shapes(b)), tmp_path/'bert.pt', {'domains': ['general']}, b)
    with pytest.raises(DasError, match='another model'): load_importance(tmp_path/'bert.pt', m)
    g = save_mlm(m, tiny_tokenizer(), tmp_path/'g')
    out = tmp_path/'out'
    with pytest.raises(DasError, match='does not run on llama'): run_continual('hat', ['a'], g, out, dict(steps=1, batch_size=4, max_len=16), corpus=TOY.get)
    assert not out.exists()
    with pytest.raises(DasError, match='fine-tuning protocol'):
        from das.evaluate import finetune, toy_task
        finetune(m, tiny_tokenizer(), toy_task())
