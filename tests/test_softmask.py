"""Tests of das.softmask: each unit's parameters move (1 - importance) times the optimizer's step.

Unit tests on tiny random models. Importance v is put on chosen units of each kind (a head: its q/k/v rows and
attention-output columns; an intermediate neuron: its row; an FFN output neuron: its row), 0 elsewhere, and the
masked run is compared with the same run without a mask:
- over 1 step both start from the same point and take a real MLM backward;
- over 20 steps the masked run is fed the unmasked run's gradients (replay), so both see the same gradients and
  "their change without the mask" is well defined (without replay the runs drift apart and so do their gradients).
The ratio tests run in float64: in float32, p_new - p_old of a step much smaller than p is itself only known to
~1e-4 relative (cancellation), which would measure the arithmetic, not the mask.
"""
import copy, tempfile
import pytest, torch
from das.core import DasError
from das.gates import encoder_layers, unit_shapes
from das.model import tiny_mlm, tiny_tokenizer, mlm_loss, chunk_texts
from das.softmask import MaskedStep, SoftMask, SoftMaskCallback, softmask_form, update_ratio

CHOSEN = [('head', 1, 2), ('intermediate', 0, 17), ('output', 1, 5)]
OPTS = {  # weight decay is part of the update: 1-step tests include it; 20-step replays use none (decay depends on p)
    'adamw': lambda ps, wd=0.01: torch.optim.AdamW(ps, lr=1e-3, weight_decay=wd),
    'sgd_momentum': lambda ps, wd=0.01: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=wd),
}


def batches(n, seed=0, vocab=100):
    g = torch.Generator().manual_seed(seed); out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (4, 12), generator=g)
        out.append({'input_ids': ids, 'labels': torch.where(torch.rand(4, 12, generator=g) < 0.3, ids, -100)})
    return out


def unit_slices(model, kind, l, u):
    "(parameter name, index) of every slice that computes unit u of `kind` in layer l."
    L = encoder_layers(model)[l]; pre = [n for n, mod in model.named_modules() if mod is L][0]
    if kind == 'head':
        dh = model.config.hidden_size // model.config.num_attention_heads; r = slice(u * dh, (u + 1) * dh)
        out = [(f'{pre}.attention.self.{x}.{w}', (r,)) for x in ('query', 'key', 'value') for w in ('weight', 'bias')]
        return out + [(f'{pre}.attention.output.dense.weight', (slice(None), r))]
    mod = 'intermediate.dense' if kind == 'intermediate' else 'output.dense'
    return [(f'{pre}.{mod}.weight', (u,)), (f'{pre}.{mod}.bias', (u,))]


def chosen_importance(model, v):
    imp = {k: torch.zeros(s) for k, s in unit_shapes(model).items()}
    for kind, l, u in CHOSEN: imp[kind][l, u] = v
    return imp


def chosen_mask(model):
    "name -> bool tensor, True on the chosen units' slices."
    ps = dict(model.named_parameters()); out = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in ps.items()}
    for kind, l, u in CHOSEN:
        for n, idx in unit_slices(model, kind, l, u): out[n][idx] = True
    return out


def train(model0, opt_name, steps, imp=None, form='update', grads=None, wd=0.01):
    "Copy of model0 after `steps` steps (real MLM backward, or the given gradients); returns (params, gradients used)."
    m = copy.deepcopy(model0); m.train(); opt = OPTS[opt_name](m.parameters(), wd)
    sm = None if imp is None else SoftMask(m, imp, form).attach(opt)
    used = []
    for i, b in enumerate(batches(steps, seed=5)):
        if grads is None:
            mlm_loss(m, b)[0].backward()
            used.append([p.grad.clone() for p in m.parameters()])
        else:
            for p, g in zip(m.parameters(), grads[i]): p.grad = g.clone()
        opt.step(); opt.zero_grad(set_to_none=True)
    if sm is not None: sm.detach()
    return {n: p.detach().clone() for n, p in m.named_parameters()}, used


@pytest.mark.parametrize('opt_name', list(OPTS))
@pytest.mark.parametrize('steps', [1, 20])
@pytest.mark.parametrize('v', [0.0, 0.5, 0.9, 1.0])
def test_update_mask_scales_exactly_the_chosen_slices(opt_name, steps, v):
    m0 = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0).double()
    wd = 0.01 if steps == 1 else 0.0
    start = {n: p.detach().clone() for n, p in m0.named_parameters()}
    free, grads = train(m0, opt_name, steps, wd=wd)
    masked, _ = train(m0, opt_name, steps, chosen_importance(m0, v), grads=None if steps == 1 else grads, wd=wd)
    sel = chosen_mask(m0)
    if v == 0.0:                                                   # importance 0 is no mask, bit for bit
        assert all(torch.equal(masked[n], free[n]) for n in free)
        return
    for n in free:
        other = ~sel[n]
        assert torch.equal(masked[n][other], free[n][other]), n      # every other unit follows the unmasked run exactly
        if not sel[n].any(): continue
        d_mask, d_free = (masked[n] - start[n])[sel[n]], (free[n] - start[n])[sel[n]]
        if v == 1.0:
            assert torch.equal(masked[n][sel[n]], start[n][sel[n]]), n   # frozen, bit for bit
        else:
            assert d_free.norm() > 0, n
            err = float((d_mask - (1 - v) * d_free).norm() / ((1 - v) * d_free).norm())
            assert err <= 1e-4, (n, err)


@pytest.mark.parametrize('opt_name', list(OPTS))
def test_importance_one_frozen_over_real_training(opt_name):
    "20 steps of real MLM training (no replay): the v = 1 units never move, the others do."
    m0 = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0)
    start = {n: p.detach().clone() for n, p in m0.named_parameters()}
    masked, _ = train(m0, opt_name, 20, chosen_importance(m0, 1.0))
    sel = chosen_mask(m0)
    for n, s in sel.items():
        if s.any(): assert torch.equal(masked[n][s], start[n][s]), n
    q = 'bert.encoder.layer.1.attention.self.query.weight'
    assert not torch.equal(masked[q][~sel[q]], start[q][~sel[q]])


def test_grad_form_is_inert_under_adamw():
    "The paper's code: gradients scaled before AdamW. A v = 0.9 unit moves more than 0.95 of its unmasked change."
    m0 = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0)
    r = update_ratio(m0, batches(20, seed=5), 0.9, 'grad', lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0))
    assert r > 0.95, r
    r_upd = update_ratio(m0, batches(20, seed=5), 0.9, 'update', lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0), replay=True)
    assert abs(r_upd - 0.1) < 1e-5, r_upd
    # under plain SGD the two forms coincide (replayed gradients)
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.05)
    assert abs(update_ratio(m0, batches(5, seed=5), 0.9, 'grad', sgd, replay=True) - 0.1) < 1e-5


@pytest.mark.parametrize('fam', ['bert', 'roberta'])
def test_both_families_and_every_slice_kind(fam):
    m0 = tiny_mlm(fam, seed=0, dropout=0.0)
    free, _ = train(m0, 'adamw', 1)
    masked, _ = train(m0, 'adamw', 1, {k: torch.full(s, 0.5) for k, s in unit_shapes(m0).items()})
    start = {n: p.detach() for n, p in m0.named_parameters()}
    n_half = 0
    for n in free:
        is_unit = any(s in n for s in ('self.query', 'self.key', 'self.value', 'intermediate.dense', 'output.dense.weight')) \
                  or (n.endswith('output.dense.bias') and 'attention' not in n)
        if is_unit:
            torch.testing.assert_close(masked[n] - start[n], 0.5 * (free[n] - start[n]), rtol=1e-4, atol=1e-9); n_half += 1
        else: assert torch.equal(masked[n], free[n]), n                  # LayerNorm, embeddings, head, attention-output bias
    assert n_half == 11 * m0.config.num_hidden_layers


def test_reference_column_masking_fails_the_freeze_test():
    "The reference code scales q/k/v gradient COLUMNS by the head mask: head h's own rows still move."
    m0 = tiny_mlm('bert'); l, h = 0, 1; dh = m0.config.hidden_size // m0.config.num_attention_heads
    m = copy.deepcopy(m0); opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    s = torch.ones(m.config.hidden_size); s[h * dh:(h + 1) * dh] = 0
    MaskedStep([(encoder_layers(m)[l].attention.self.query.weight, s[None, :])], 'grad').attach(opt)
    mlm_loss(m, batches(1)[0])[0].backward(); opt.step()
    W0, W1 = encoder_layers(m0)[l].attention.self.query.weight, encoder_layers(m)[l].attention.self.query.weight
    assert not torch.equal(W0[h * dh:(h + 1) * dh], W1[h * dh:(h + 1) * dh])


def test_detach_and_reattach():
    m0 = tiny_mlm('bert', dropout=0.0)
    m = copy.deepcopy(m0); opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    sm = SoftMask(m, {k: torch.ones(s) for k, s in unit_shapes(m).items()}).attach(opt)
    sm.attach(opt)                                                   # attaching twice keeps one pair of hooks
    assert len(sm.handles) == 2
    with sm: pass                                                    # the context manager detaches
    assert sm.handles == []
    mlm_loss(m, batches(1)[0])[0].backward(); opt.step()             # detached: the step is unmasked
    q = 'bert.encoder.layer.0.attention.self.query.weight'
    assert not torch.equal(dict(m.named_parameters())[q], dict(m0.named_parameters())[q])


def test_accelerate_wrapped_optimizer_is_unwrapped():
    from accelerate import Accelerator
    acc = Accelerator(cpu=True)
    m = tiny_mlm('bert', dropout=0.0); m0 = copy.deepcopy(m)
    opt = acc.prepare(torch.optim.AdamW(m.parameters(), lr=1e-2))
    SoftMask(m, {k: torch.ones(s) for k, s in unit_shapes(m).items()}).attach(opt)
    mlm_loss(m, batches(1)[0])[0].backward(); opt.step()
    q = 'bert.encoder.layer.0.intermediate.dense.weight'
    assert torch.equal(dict(m.named_parameters())[q], dict(m0.named_parameters())[q])


def test_trainer_and_our_loop_reach_the_same_parameters():
    "A user's transformers.Trainer with SoftMaskCallback trains the same batches to the same parameters as train_domain."
    from transformers import Trainer, TrainingArguments
    from das.dap import block_loader, train_domain
    tok = tiny_tokenizer(100)
    words = [t for t in tok.get_vocab() if t.startswith('w')]
    g = torch.Generator().manual_seed(0)
    texts = [' '.join(words[int(i)] for i in torch.randint(0, len(words), (40,), generator=g)) for _ in range(30)]
    blocks = chunk_texts(tok, texts, max_len=32)
    m0 = tiny_mlm('bert', vocab_size=100, max_len=32, seed=0, dropout=0.0)
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(1)) for k, s in unit_shapes(m0).items()}
    imp['head'][0, 1] = 1.0
    steps, bs, lr, seed = 6, 4, 1e-3, 7
    ours = copy.deepcopy(m0)
    train_domain(ours, tok, blocks, importance=imp, contrast=False, steps=steps, batch_size=bs, lr=lr, warmup_ratio=0.0,
                 seed=seed, progress=False)
    rows = [{k: b[k][i] for k in ('input_ids', 'attention_mask', 'labels')}
            for b in block_loader(blocks, tok.mask_token_id, 100, steps * bs, bs, seed) for i in range(bs)]

    class Rows(torch.utils.data.IterableDataset):   # iterable: the Trainer keeps the order
        def __iter__(self): return iter(rows)

    theirs = copy.deepcopy(m0)
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(d, max_steps=steps, per_device_train_batch_size=bs, learning_rate=lr, lr_scheduler_type='linear',
                                 warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, optim='adamw_torch', report_to=[],
                                 save_strategy='no', logging_strategy='no', use_cpu=True, disable_tqdm=True, seed=seed)
        Trainer(model=theirs, args=args, train_dataset=Rows(), callbacks=[SoftMaskCallback(imp)]).train()
    for (n, p), q, p0 in zip(ours.named_parameters(), theirs.parameters(), m0.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=lambda s: f'{n}: {s}')
    h = slice(8, 16)   # head 1 of layer 0 (dh = 8): importance 1, bit-identical in both
    for m in (ours, theirs):
        assert torch.equal(encoder_layers(m)[0].attention.self.query.weight[h], encoder_layers(m0)[0].attention.self.query.weight[h])
    assert not torch.equal(ours.bert.encoder.layer[1].output.dense.weight, m0.bert.encoder.layer[1].output.dense.weight)


def test_errors_before_any_step():
    m = tiny_mlm('bert')
    with pytest.raises(DasError, match='head importance has shape'): SoftMask(m, {'head': torch.zeros(2, 5)})
    with pytest.raises(DasError, match='outside'): SoftMask(m, {'output': torch.full((2, 32), -0.1)})
    with pytest.raises(DasError, match='outside'): SoftMask(m, {'output': torch.full((2, 32), 1.5)})
    with pytest.raises(DasError, match='kinds from'): SoftMask(m, [1, 2])
    with pytest.raises(DasError, match='not a soft-mask form'): SoftMask(m, {'head': torch.zeros(2, 4)}, 'gradients')
    with pytest.raises(DasError, match='not a soft-mask form'): softmask_form(True)
    with pytest.raises(DasError, match='not in the optimizer'):   # an optimizer over the head only
        SoftMask(m, {'head': torch.zeros(2, 4)}).attach(torch.optim.AdamW(m.cls.parameters()))
    with pytest.raises(DasError, match='not a torch optimizer'): SoftMask(m, {'head': torch.zeros(2, 4)}).attach(object())
    with pytest.raises(DasError, match='outside'): SoftMaskCallback({'head': torch.full((2, 4), 2.0)})
    with pytest.raises(DasError, match='form'): SoftMaskCallback({'head': torch.zeros(2, 4)}, form=False)
