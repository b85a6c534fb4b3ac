"Tests of das.model: masked-only MLM loss, masking, chunking, loading errors, atomic saving, a real-model smoke run."
import json, os
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import numpy as np
import pytest
import torch
from das.core import DasError
from das.model import (chunk_texts, encoder_of, evaluate_mlm, head_of, load_mlm, mlm_collator, mlm_loss, save_mlm,
                       tiny_mlm, tiny_tokenizer, warmup)

def _batch(vocab=100, seed=0, b=4, s=24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    am = torch.ones_like(ids); am[-1, s // 2:] = 0
    sel = (torch.rand(ids.shape, generator=g) < 0.25) & am.bool()
    return dict(input_ids=ids, attention_mask=am, labels=torch.where(sel, ids, -100))

@pytest.mark.parametrize('family', ['bert', 'roberta'])
def test_masked_only_loss_equals_stock(family):
    m = tiny_mlm(family).eval()
    for seed in range(3):
        b = _batch(seed=seed)
        loss, n_correct, n_masked = mlm_loss(m, b)
        ref = m(**b)
        assert torch.allclose(loss, ref.loss, atol=1e-5)
        sel = b['labels'] != -100
        assert n_masked == int(sel.sum())
        assert n_correct == int((ref.logits[sel].argmax(-1) == b['labels'][sel]).sum())

@pytest.mark.parametrize('family', ['bert', 'roberta'])
def test_encoder_and_head(family):
    m = tiny_mlm(family)
    assert encoder_of(m) is getattr(m, family)
    assert head_of(m) is (m.cls if family == 'bert' else m.lm_head)

TEXTS = ['the w1 w2 w3 of w4 w5', 'a w6 w7 is w8 w9 w10 w11', 'w12 and w13 w14 to w15'] * 4

def test_collator_reproducible():
    tok = tiny_tokenizer()
    rows = [dict(r) for r in chunk_texts(tok, TEXTS, max_len=10)]
    a, b, c = (mlm_collator(tok, seed=s)(rows) for s in (3, 3, 4))
    assert torch.equal(a['input_ids'], b['input_ids']) and torch.equal(a['labels'], b['labels'])
    assert not torch.equal(a['labels'], c['labels'])
    torch.manual_seed(0); x = mlm_collator(tok, seed=3)(rows)   # global RNG state does not matter
    torch.manual_seed(99); y = mlm_collator(tok, seed=3)(rows)
    assert torch.equal(x['labels'], y['labels'])

def test_chunking():
    tok = tiny_tokenizer()
    ds = chunk_texts(tok, TEXTS, max_len=10)
    arr = np.array(ds['input_ids'])
    n_tok = sum(len(tok(t, add_special_tokens=False)['input_ids']) + 1 for t in TEXTS)
    assert arr.shape == (n_tok // 8, 10)
    assert (arr[:, 0] == tok.cls_token_id).all() and (arr[:, -1] == tok.sep_token_id).all()
    assert np.array_equal(np.array(ds['special_tokens_mask']), np.isin(arr, tok.all_special_ids))
    assert chunk_texts(tok, TEXTS, max_len=10)['input_ids'] == ds['input_ids']
    body = arr[:, 1:-1].ravel()   # the blocks' bodies are the concatenated stream, in order
    stream = [i for t in TEXTS for i in tok(t, add_special_tokens=False)['input_ids'] + [tok.sep_token_id]]
    assert body.tolist() == stream[:len(body)]
    with pytest.raises(DasError, match='fewer than one block'): chunk_texts(tok, ['w1'], max_len=32)

def test_evaluate_fixed_masks():
    tok, m = tiny_tokenizer(), tiny_mlm()
    ds = chunk_texts(tok, TEXTS, max_len=10)
    assert evaluate_mlm(m, ds, tok, batch_size=2, seed=1) == evaluate_mlm(m, ds, tok, batch_size=2, seed=1)
    r1, r5 = evaluate_mlm(m, ds, tok, batch_size=1, seed=1), evaluate_mlm(m, ds, tok, batch_size=5, seed=1)
    assert (r1['n_masked'], r1['accuracy']) == (r5['n_masked'], r5['accuracy']) and abs(r1['loss'] - r5['loss']) < 1e-5

def test_load_errors(tmp_path):
    with pytest.raises(DasError, match='does not exist.*Fix:'): load_mlm(tmp_path / 'missing')
    with pytest.raises(DasError, match='no config.json.*Fix:'): load_mlm(tmp_path)
    for mt in ('gpt2', 't5'):
        (tmp_path / 'config.json').write_text(json.dumps({'model_type': mt}))
        with pytest.raises(DasError, match=f"not a masked-LM encoder folder \\(model_type '{mt}'.*Fix: point model.path"):
            load_mlm(tmp_path)
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
    with pytest.raises(DasError, match='no weights file.*Fix:'): load_mlm(tmp_path)
    (tmp_path / 'model.safetensors').write_bytes(b'')
    with pytest.raises(DasError, match='no tokenizer files.*Fix:'): load_mlm(tmp_path)

def test_save_roundtrip_and_atomic(tmp_path):
    tok, m = tiny_tokenizer(), tiny_mlm('roberta')
    save_mlm(m, tok, tmp_path / 'm')
    assert (tmp_path / 'm' / 'model.safetensors').exists()
    back, _ = load_mlm(tmp_path / 'm', verbose=False)
    assert back.das_loading_info['newly_initialised'] == []
    b = _batch()
    assert torch.allclose(mlm_loss(back.eval(), b)[0], mlm_loss(m.eval(), b)[0])
    class Boom(Exception): pass
    class Bad:
        def save_pretrained(self, d): (d / 'partial').write_text('x'); raise Boom('killed mid-save')
    with pytest.raises(Boom): save_mlm(tiny_mlm('bert'), Bad(), tmp_path / 'm')
    assert load_mlm(tmp_path / 'm', verbose=False)[0].config.model_type == 'roberta'   # the old folder is intact
    assert not (tmp_path / 'm' / 'partial').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m']

def test_real_base_model_warmup(tmp_path):
    from das.data import base_model_dir
    m, tok = load_mlm(base_model_dir(), verbose=False)
    assert type(m).__name__ == 'BertForMaskedLM'
    assert 'cls.predictions.transform.dense.weight' in m.das_loading_info['newly_initialised']
    sents = ['The cat sat on the mat and looked at the garden through the open window.',
             'Paris is the capital and most populous city of France, on the river Seine.',
             'Water boils at one hundred degrees Celsius at sea level under normal pressure.',
             'The committee approved the new budget after a long debate in the evening.',
             'Mathematics is the study of numbers, shapes, quantities and their relations.',
             'The river flows north through the valley before it reaches the cold sea.',
             'She played the piano at the concert hall while the audience listened quietly.',
             'Computers store data in memory and process it with a central processing unit.']
    h = warmup(m, tok, sents * 4, sents, steps=2, batch_size=4, max_len=32, lr_encoder=1e-4, lr_head=2e-3,
               warmup_ratio=0.0, seed=0, log_every=1, progress=False)
    assert len(h['loss']) == 2 and all(np.isfinite(h['loss'])) and h['heldout'][-1]['n_masked'] > 0


def _masked_ids_sum(seed):
    from das.model import mlm_collator, tiny_tokenizer
    rows = [{'input_ids': list(range(5, 40))} for _ in range(4)]
    return int(mlm_collator(tiny_tokenizer(), seed=seed)(rows)['input_ids'].sum())


def test_seeded_collator_in_a_worker_process():
    "Test runners (nbdev_test) run notebooks in process pools: seeded masking works there, with the main process's masks."
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as ex:
        got = ex.submit(_masked_ids_sum, 1).result()
    assert got == _masked_ids_sum(1)


def test_load_mlm_new_head_is_seeded():
    "The base model lacks an MLM head: its new weights depend on load_mlm's seed only, not on the global RNG state."
    import torch
    from das.data import base_model_dir
    from das.model import load_mlm
    torch.manual_seed(123); a, _ = load_mlm(base_model_dir(), verbose=False)
    torch.manual_seed(456); b, _ = load_mlm(base_model_dir(), verbose=False)
    c, _ = load_mlm(base_model_dir(), verbose=False, seed=1)
    wa, wb, wc = (m.cls.predictions.transform.dense.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
