"""The masked-LM (BERT/RoBERTa) path, pinned bit for bit: every method of the study on a tiny BERT (and DAS on a tiny
RoBERTa), trained two toy domains through `run_continual`, then evaluated. The digests in tests/data/bert_pin.json were
recorded with the code that produced the committed MiniLM study (code 23c79959af), before the model-family refactor;
a code version that passes this test computes the same numbers on the masked-LM path (see das.report's code
equivalence note). Record again only for a deliberate change of results: `python tests/test_bert_pin.py --record`."""
import hashlib, json, sys
from pathlib import Path
import numpy as np
import pytest, torch
from das.continual import make_method, method_params_of, run_continual
from das.evaluate import evaluate_model, toy_task
from das.model import load_mlm, save_mlm, tiny_mlm, tiny_tokenizer

PIN = Path(__file__).parent/'data'/'bert_pin.json'
PINNED = '23c79959af'   # the code the digests were recorded with (das.evaluate.code_version): the committed MiniLM study's
EQUIV = Path(__file__).resolve().parents[1]/'results'/'code_equivalence.json'
TOY = {'a': [' '.join(f'w{(i * 7 + j) % 30}' for j in range(40)) for i in range(50)],
       'b': [' '.join(f'w{30 + (i + j) % 30}' for j in range(40)) for i in range(50)]}
TOY['general'] = TOY['a'][:25] + TOY['b'][:25]
CFG = dict(steps=3, batch_size=4, max_len=16, importance_batches=1)
METHODS = ['base', 'one', 'ncl', 'pool', 'das', 'das_gradmask', 'das_nosoftmask', 'das_noinit', 'das_random', 'das_nocontrast',
           'das_domain', 'ewc', 'kd', 'derpp', 'replay', 'adapter', 'prompt', 'hat', 'cpt', 'elle']


def digest_tensors(named) -> str:
    "sha256 over (name, dtype, shape, bytes) of every tensor, in name order."
    h = hashlib.sha256()
    for k, v in sorted(named.items()):
        v = torch.as_tensor(v).detach().cpu().contiguous()
        h.update(k.encode()); h.update(str(v.dtype).encode()); h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes() if v.dtype != torch.bfloat16 else v.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:20]


def digest_folder(folder: Path) -> dict:
    "Digest of every tensor file a checkpoint holds (weights, importance, plugin state) and of its training history."
    from safetensors.torch import load_file
    out = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == '.safetensors': out[f.name] = digest_tensors(load_file(str(f)))
        elif f.suffix == '.pt':
            obj = torch.load(f, map_location='cpu', weights_only=True)
            if isinstance(obj, dict) and 'importance' in obj: obj = obj['importance']
            out[f.name] = digest_tensors({k: v for k, v in obj.items() if torch.is_tensor(v)}) if isinstance(obj, dict) else 'unhashed'
        elif f.name == 'history.json':
            hist = json.loads(f.read_text())
            out[f.name] = hashlib.sha256(json.dumps({k: v for k, v in hist.items() if k != 'seconds' and 'second' not in k},
                                                    sort_keys=True, default=str).encode()).hexdigest()[:20]
    return out


def run_all(tmp: Path) -> dict:
    torch.set_num_threads(1)
    res = {}
    for fam in ('bert', 'roberta'):
        gdir = save_mlm(tiny_mlm(fam, vocab_size=100, max_len=128, seed=0), tiny_tokenizer(), tmp/f'general_{fam}')
        for m in (METHODS if fam == 'bert' else ['das']):
            man = run_continual(make_method(m, method_params_of(m)), ['a', 'b'], gdir, tmp/fam/m, {**CFG, 'seed': 1}, general_importance=tmp/f'imp_{fam}.pt',
                                progress=False, corpus=TOY.get)
            res[f'{fam}/{m}'] = {c['label']: digest_folder(Path(c['path'])) for c in man['checkpoints']}
    model, tok = load_mlm(tmp/'bert'/'das'/'1-b', verbose=False)
    ev = evaluate_model(model, tok, tasks=['toy'], corpora=['a', 'general'], seeds=(0, 1), task_data={'toy': toy_task()},
                        corpus_data={'a': TOY['a'], 'general': TOY['general']}, mlm_seeds=(0, 1), mlm_max_len=16, dev=True)
    ev = {k: v for k, v in ev.items() if k not in ('seconds',)}
    for t in ev['tasks'].values(): t.pop('seconds', None)
    res['evaluate'] = hashlib.sha256(json.dumps(ev, sort_keys=True).encode()).hexdigest()[:20]
    res['evaluate_values'] = {c: [ev['mlm'][c]['loss'], ev['mlm'][c]['accuracy']] for c in ev['mlm']}
    return res


def test_masked_lm_path_is_pinned(tmp_path):
    want = json.loads(PIN.read_text())
    got = run_all(tmp_path)
    assert got == want, 'the masked-LM path computes other numbers than the pinned code: ' + json.dumps(
        {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}, indent=1)[:3000]


def test_the_current_code_is_recorded_as_equivalent():
    "Every code version that passes the pin is named in results/code_equivalence.json, which the report quotes beside the rows' label."
    from das.evaluate import code_version
    eq = json.loads(EQUIV.read_text())
    now = code_version()
    assert now == PINNED or now in eq[PINNED]['equivalent'], (
        f"code {now} is not recorded: run `python tests/test_bert_pin.py --equivalent` (it runs the pin first), then "
        "`dvc repro -s report report_quick` so the tables name it")


def record_equivalent():
    "Run the pin; if it holds, add the current code version to results/code_equivalence.json."
    import tempfile
    from das.core import save_json
    from das.evaluate import code_version
    with tempfile.TemporaryDirectory() as d:
        got = run_all(Path(d))
    if got != json.loads(PIN.read_text()): raise SystemExit('the pin does not hold: this code computes other numbers')
    eq = json.loads(EQUIV.read_text()) if EQUIV.exists() else {}
    e = eq.setdefault(PINNED, {'test': 'tests/test_bert_pin.py', 'equivalent': []})
    if code_version() not in e['equivalent']: e['equivalent'].append(code_version())
    save_json(eq, EQUIV)
    print('recorded', code_version(), 'as equivalent to', PINNED)


if __name__ == '__main__' and '--equivalent' in sys.argv: record_equivalent()
if __name__ == '__main__' and '--record' in sys.argv:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        PIN.parent.mkdir(exist_ok=True)
        PIN.write_text(json.dumps(run_all(Path(d)), indent=1, sort_keys=True) + '\n')
    print('recorded', PIN)
