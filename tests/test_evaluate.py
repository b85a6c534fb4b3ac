"""Tests of das.evaluate: matrix summaries on hand-made matrices, features, probe, fine-tuning, task checks, evaluate_model."""
import json
import numpy as np
import pytest
import torch
from das.core import DasError
from das.evaluate import (average, backward_transfer, check_task, encode_texts, evaluate_model, finetune, forgetting_rate,
                          forward_transfer, linear_probe, matrix, stratified_subset, summarize, toy_task)
from das.model import tiny_mlm, tiny_tokenizer

A = [[80, 50, 40],
     [76, 85, 45],
     [70, 80, 90]]
B = [60, 45, 42]


@pytest.fixture(autouse=True)
def one_thread():
    "Tiny models are overhead-bound: one thread is faster and does not fight other jobs for the 2 cores."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def tiny():
    return tiny_mlm('bert', seed=0), tiny_tokenizer()


@pytest.fixture(scope='module')
def toy():
    return toy_task(n_train=120, n_test=45, seed=1)


def test_summaries_by_hand():
    assert average(A) == 80.0                      # (70 + 80 + 90) / 3
    assert forgetting_rate(A) == 7.5               # ((80 - 70) + (85 - 80)) / 2
    assert backward_transfer(A) == -7.5
    assert forward_transfer(A, B) == 4.0           # ((50 - 45) + (45 - 42)) / 2
    assert forward_transfer(np.array(A), np.array(B)) == 4.0


def test_negative_forgetting_and_nan_upper_triangle():
    tri = [[70, np.nan, np.nan], [72, 80, np.nan], [75, 82, 90]]
    assert forgetting_rate(tri) == -3.5            # ((70 - 75) + (80 - 82)) / 2: backward transfer
    assert backward_transfer(tri) == 3.5
    with pytest.raises(DasError, match=r'A\[0\]\[1\], A\[1\]\[2\], which are NaN'): forward_transfer(tri, B)
    with pytest.raises(DasError, match=r'A\[2\]\[2\], which is NaN'): average([[1, 2, 3], [4, 5, 6], [7, 8, np.nan]])


def test_summaries_refuse_bad_matrices():
    for f in (forgetting_rate, backward_transfer):
        with pytest.raises(DasError, match='at least 2 domains'): f([[0.5]])
    with pytest.raises(DasError, match='at least 2 domains'): forward_transfer([[0.5]], [0.1])
    assert average([[0.5]]) == 0.5
    with pytest.raises(DasError, match=r'shape \(2, 3\)'): average([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(DasError, match='rows of different lengths'): forgetting_rate([[1, 2], [3]])
    with pytest.raises(DasError, match='b has 2 entries'): forward_transfer(A, [1, 2])


def test_stratified_subset_is_fixed_and_stratified():
    lab = [0] * 70 + [1] * 25 + [2] * 5
    sub = stratified_subset(lab, 20)
    assert sub == stratified_subset(lab, 20) and sub == sorted(sub)
    assert np.bincount(np.array(lab)[sub]).tolist() == [14, 5, 1]
    assert stratified_subset(lab, None) == list(range(100))
    with pytest.raises(DasError, match='cannot keep 2 examples of 3 classes'): stratified_subset(lab, 2)


def test_features_do_not_depend_on_batching(tiny):
    m, tok = tiny
    texts = ['the w1 w2 w3 of w4', 'a w5', 'w6 w7 w8 w9 w10 w11 w12 w13 in the w15', 'w20 w21', '']
    f = encode_texts(m, tok, texts, batch_size=64)
    assert f.shape == (5, 32) and f.dtype == np.float32
    for bs in (1, 2, 3):
        np.testing.assert_allclose(encode_texts(m, tok, texts, batch_size=bs), f, atol=1e-5)
    np.testing.assert_allclose(encode_texts(m, tok, texts[::-1])[::-1], f, atol=1e-5)
    m.train(); encode_texts(m, tok, texts[:1]); assert m.training; m.eval()
    with pytest.raises(DasError, match='non-string'): encode_texts(m, tok, ['ok', None])


def test_features_of_a_roberta_model():
    assert encode_texts(tiny_mlm('roberta'), tiny_tokenizer(), ['the w1 w2', 'a']).shape == (2, 32)


def test_probe_seeds_differ_but_reproduce(tiny, toy):
    m, tok = tiny
    Xtr, Xte = encode_texts(m, tok, list(toy['train']['text'])), encode_texts(m, tok, list(toy['test']['text']))
    ytr, yte = list(toy['train']['label']), list(toy['test']['label'])
    rs = [linear_probe(Xtr, ytr, Xte, yte, seed=s, n_classes=3, epochs=30) for s in range(4)]
    assert linear_probe(Xtr, ytr, Xte, yte, seed=2, n_classes=3, epochs=30) == rs[2]
    assert len({(r['macro_f1'], r['accuracy']) for r in rs}) > 1
    assert set(rs[0]) == {'macro_f1', 'accuracy'} and all(0 <= r['macro_f1'] <= 1 for r in rs)


def test_probe_solves_separable_data_and_uses_train_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)); X = X[np.abs(X[:, 0] + X[:, 1]) > 1][:200]; y = (X[:, 0] + X[:, 1] > 0).astype(int)
    kw = dict(epochs=100, lr=1e-2)
    assert linear_probe(X[:150], y[:150], X[150:], y[150:], seed=0, **kw) == {'macro_f1': 1.0, 'accuracy': 1.0}
    shifted = linear_probe(X[:150], y[:150], X[150:] + 50, y[150:], seed=0, **kw)   # standardized with train stats
    assert shifted['accuracy'] == pytest.approx(y[150:].mean())
    with pytest.raises(DasError, match='do not match'): linear_probe(X[:150], y[:149], X[150:], y[150:])
    with pytest.raises(DasError, match=r'labels must be in 0\.\.0'): linear_probe(X[:150], y[:150], X[150:], y[150:], n_classes=1)


def test_probe_leaves_thread_count(tiny):
    n = torch.get_num_threads()
    linear_probe(np.eye(4), [0, 1, 0, 1], np.eye(4), [0, 1, 0, 1], epochs=1)
    assert torch.get_num_threads() == n


def test_finetune_leaves_model_bit_identical(tiny, toy):
    m, tok = tiny
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng_before = torch.get_rng_state()
    r = finetune(m, tok, toy, seed=0, epochs=3, lr=3e-3, batch_size=8, max_train=60, max_len=32)
    after = m.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng_before)            # the caller's RNG is untouched
    assert not m.training
    assert r == finetune(m, tok, toy, seed=0, epochs=3, lr=3e-3, batch_size=8, max_train=60, max_len=32)
    assert set(r) == {'macro_f1', 'accuracy'}


def test_finetune_learns_the_toy_task(tiny, toy):
    m, tok = tiny
    assert finetune(m, tok, toy, seed=0, epochs=8, lr=3e-3, batch_size=8, max_train=90)['accuracy'] > 0.5


def test_check_task_refuses_bad_tasks(toy):
    import datasets
    assert check_task(toy) == 3
    bad = toy.copy(); bad['test'] = toy['test'].filter(lambda r: r['label'] != 2)
    with pytest.raises(DasError, match=r"train and test hold different label sets \(only in train: \['c2'\]"): check_task(bad)
    bad = toy.copy(); bad['dev'] = toy['dev'].filter(lambda r: r['label'] != 0)
    with pytest.raises(DasError, match='train and dev hold different label sets'): check_task(bad)
    bad = toy.copy(); bad['train'] = toy['train'].select([])
    with pytest.raises(DasError, match='train is empty'): check_task(bad)
    with pytest.raises(DasError, match="expected 'train' and 'test'"): check_task({'train': toy['train']})
    bad = toy.copy(); bad['test'] = toy['test'].cast_column('label', datasets.Value('int64'))
    with pytest.raises(DasError, match='not a ClassLabel'): check_task(bad)
    bad = toy.copy(); bad['test'] = toy['test'].remove_columns('text')
    with pytest.raises(DasError, match='has columns'): check_task(bad)


def _run(m, tok, toy, **kw):
    corpus = {'toy': [' '.join(f'w{(i * 7 + j) % 60}' for j in range(30)) for i in range(40)]}
    return evaluate_model(m, tok, tasks=['toy'], corpora=['toy'], task_data={'toy': toy}, corpus_data=corpus,
                          max_train=60, max_test=30, max_len=32, mlm_max_len=32, **kw)


def _drop_time(r):
    r = json.loads(json.dumps(r)); r.pop('seconds')
    for v in r['tasks'].values(): v.pop('seconds')
    return r


def test_evaluate_model_is_json_and_reproducible(tiny, toy):
    m, tok = tiny
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = _run(m, tok, toy)
    assert json.loads(json.dumps(r)) == r
    assert _drop_time(_run(m, tok, toy)) == _drop_time(r)
    t = r['tasks']['toy']
    assert len(t['macro_f1']) == len(t['accuracy']) == 3 and (t['n_train'], t['n_test']) == (60, 30)
    assert set(r['mlm']['toy']) == {'loss', 'accuracy', 'n_masked'} and r['mlm']['toy']['n_masked'] > 0
    assert r['settings']['protocol'] == 'probe' and r['seconds'] >= 0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_evaluate_model_examples_do_not_depend_on_probe_seeds(tiny, toy):
    m, tok = tiny
    r1, r2 = _run(m, tok, toy, seeds=(0, 1)), _run(m, tok, toy, seeds=(1,))
    assert r1['tasks']['toy']['macro_f1'][1] == r2['tasks']['toy']['macro_f1'][0]   # same examples, same seed


def test_evaluate_model_paper_protocol(tiny, toy):
    m, tok = tiny
    r = evaluate_model(m, tok, tasks=['toy'], corpora=[], task_data={'toy': toy}, protocol='paper', seeds=(0,),
                       max_train=30, max_test=15, max_len=16, finetune_kw=dict(epochs=1, batch_size=8))
    assert r['settings']['protocol'] == 'paper' and len(r['tasks']['toy']['accuracy']) == 1 and r['mlm'] == {}


def test_evaluate_model_refuses_bad_input(tiny, toy):
    m, tok = tiny
    with pytest.raises(DasError, match="unknown protocol 'sgd'"): evaluate_model(m, tok, ['toy'], [], protocol='sgd', task_data={'toy': toy})
    with pytest.raises(DasError, match="unknown domain 'nope'"): evaluate_model(m, tok, ['nope'], [])
    bad = toy.copy(); bad['test'] = toy['test'].filter(lambda r: r['label'] != 2)
    with pytest.raises(DasError, match='different label sets'): evaluate_model(m, tok, ['toy'], [], task_data={'toy': bad})


def _fake(row, shift=(1, -1), names=('movie', 'computing', 'pubmed77')):
    return {'tasks': {n: {'macro_f1': [v + s for s in shift], 'accuracy': [v / 100] * len(shift)} for n, v in zip(names, row)}}


def test_matrix_and_summarize():
    names = ['movie', 'computing', 'pubmed77']
    rows = [_fake(r) for r in A]
    Am, P = matrix(rows, 'macro_f1', names)
    np.testing.assert_array_equal(Am, np.array(A, float)); assert P.shape == (2, 3, 3)
    np.testing.assert_array_equal(P[1], np.array(A) - 1)
    S = summarize(rows, names, base=_fake(B))
    assert S['macro_f1']['average'] == {'mean': 80.0, 'std': pytest.approx(np.sqrt(2)), 'per_seed': [81.0, 79.0]}
    assert S['macro_f1']['forgetting_rate'] == {'mean': 7.5, 'std': 0.0, 'per_seed': [7.5, 7.5]}
    assert S['macro_f1']['backward_transfer']['mean'] == -7.5
    assert S['macro_f1']['forward_transfer']['per_seed'] == [4.0, 4.0]
    assert S['accuracy']['average']['mean'] == pytest.approx(0.8)
    assert json.loads(json.dumps(S)) == S
    assert set(summarize(rows[:1], names[:1])['macro_f1']) == {'average', 'last_row'}
    with pytest.raises(DasError, match='3 results for 2 tasks'): matrix(rows, 'macro_f1', names[:2])
    with pytest.raises(DasError, match="unknown metric 'f1'"): matrix(rows, 'f1', names)


def test_matrix_missing_tasks_are_nan():
    names = ['movie', 'computing']
    rows = [{'tasks': {'movie': {'macro_f1': [0.5], 'accuracy': [0.6]}}},
            {'tasks': {'movie': {'macro_f1': [0.4], 'accuracy': [0.6]}, 'computing': {'macro_f1': [0.7], 'accuracy': [0.8]}}}]
    Am, _ = matrix(rows, 'macro_f1', names)
    assert np.isnan(Am[0, 1]) and Am[1, 1] == 0.7
    assert summarize(rows, names)['macro_f1']['forgetting_rate']['mean'] == pytest.approx(0.1)


def test_evaluate_model_refuses_a_tiny_corpus_before_work(tiny, toy):
    m, tok = tiny
    with pytest.raises(DasError, match='fewer than one block'):
        evaluate_model(m, tok, ['toy'], ['c'], task_data={'toy': toy}, corpus_data={'c': ['w1 w2']})


def test_dev_scores_come_from_the_same_probe_and_leave_test_scores_alone(tiny, toy):
    m, tok = tiny
    r, rd = _run(m, tok, toy), _run(m, tok, toy, dev=True)
    t, td = r['tasks']['toy'], rd['tasks']['toy']
    assert (td['macro_f1'], td['accuracy']) == (t['macro_f1'], t['accuracy']) and 'dev' not in t
    assert td['dev']['n'] == len(toy['dev']) and len(td['dev']['macro_f1']) == 3 and rd['settings']['dev']
    tr = toy['train'].select(stratified_subset(list(toy['train']['label']), 60))    # evaluate_model's training subsample
    Xtr, Xdv = encode_texts(m, tok, list(tr['text']), 32), encode_texts(m, tok, list(toy['dev']['text']), 32)
    assert linear_probe(Xtr, list(tr['label']), Xdv, list(toy['dev']['label']), seed=1, n_classes=3) == \
        {k: td['dev'][k][1] for k in ('macro_f1', 'accuracy')}          # seed 1's probe, read on dev
    A, _ = matrix([rd], 'macro_f1', ['toy'], split='dev')
    assert A[0, 0] == pytest.approx(np.mean(td['dev']['macro_f1']))
    with pytest.raises(DasError, match='no dev scores'): matrix([r], 'macro_f1', ['toy'], split='dev')
    no_dev = {k: toy[k] for k in ('train', 'test')}
    with pytest.raises(DasError, match="have no 'dev' split"): evaluate_model(m, tok, ['toy'], [], task_data={'toy': no_dev}, dev=True)


def test_dev_scores_of_the_paper_protocol(tiny, toy):
    m, tok = tiny
    kw = dict(tasks=['toy'], corpora=[], task_data={'toy': toy}, protocol='paper', seeds=(0,), max_train=30, max_test=15,
              max_len=16, finetune_kw=dict(epochs=1, batch_size=8))
    r, rd = evaluate_model(m, tok, **kw), evaluate_model(m, tok, dev=True, **kw)
    assert rd['tasks']['toy']['accuracy'] == r['tasks']['toy']['accuracy'] and len(rd['tasks']['toy']['dev']['accuracy']) == 1
