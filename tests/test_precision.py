"""continual.precision: fp32 (the default, bit for bit the earlier runs) or bf16 (autocast of forward, losses and
importance; weights and optimizer state stay fp32). accelerate's state is one per process, so the bf16 loop runs in a
child process."""
import json, subprocess, sys
from pathlib import Path
import pytest, torch
from das.continual import DapConfig
from das.core import DasError
from das.family import tiny_lm
from das.importance import compute_importance
from das.model import save_mlm, tiny_mlm, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_precision_setting_is_checked_and_fp32_keeps_the_fingerprint():
    with pytest.raises(DasError, match="precision='fp16'"): DapConfig.from_dict({'precision': 'fp16'})
    assert 'precision' not in DapConfig().record()                       # fp32 runs: the same run fingerprint and manifest as before
    assert DapConfig(precision='bf16').record()['precision'] == 'bf16'


@pytest.mark.parametrize('fam', ['bert', 'llama'])
def test_bf16_importance_correlates_with_fp32(fam):
    m = tiny_mlm('bert') if fam == 'bert' else tiny_lm('llama')
    g = torch.Generator().manual_seed(0)
    bs = [{'input_ids': (ids := torch.randint(5, 100, (4, 16), generator=g)), 'attention_mask': torch.ones_like(ids)} for _ in range(2)]
    a, b = (compute_importance(m, bs, loss='kl', normalized=False, precision=p) for p in ('fp32', 'bf16'))
    for k in a:
        r = torch.corrcoef(torch.stack([a[k].flatten(), b[k].flatten()]))[0, 1]
        assert r > 0.9, (fam, k, float(r))
    with pytest.raises(DasError, match="precision='fp64'"): compute_importance(m, bs, loss='kl', precision='fp64')


def test_bf16_loop_runs_with_fp32_weights(tmp_path):
    g = save_mlm(tiny_lm('llama'), tiny_tokenizer(), tmp_path/'g')
    code = f"""
import json, torch
from das.continual import run_continual
toy = {{'a': [' '.join(f'w{{(i * 7 + j) % 30}}' for j in range(40)) for i in range(50)]}}; toy['general'] = toy['a']
m = run_continual('das', ['a'], {str(g)!r}, {str(tmp_path/'out')!r}, dict(steps=2, batch_size=4, max_len=16, importance_batches=1,
                  precision='bf16'), progress=False, corpus=toy.get)
from das.model import load_lm
w = load_lm(m['checkpoints'][0]['path'], verbose=False)[0]
print(json.dumps({{'dtypes': sorted({{str(p.dtype) for p in w.parameters()}}), 'precision': m['config']['precision']}}))
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {'dtypes': ['torch.float32'], 'precision': 'bf16'}
    h = json.loads((tmp_path/'out'/'0-a'/'history.json').read_text())
    assert all(x == x and x > 0 for x in h['mlm'] + h['contrast'])
