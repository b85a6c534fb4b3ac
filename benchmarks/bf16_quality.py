"""Does bf16 mixed precision keep the results? One domain trained in fp32 and in bf16 (continual.precision), on MiniLM
(the study's general LM) and on SmolLM2 (the decoder's general LM), then both checkpoints scored in fp32 on the same
held-out blocks (paired differences with their standard errors), and the general importance computed in fp32 and in
bf16 (Pearson correlation per unit kind and over all units).

Criteria (issue: speed): the held-out loss on the domain and on the general corpus differs from fp32 by less than 2
paired SEs, and the importance vectors correlate above 0.99. The reference beside them is what another training seed
(fp32, seed 1) and another importance seed (fp32, seed 1: other dropout masks) change: bf16 is within the run-to-run
noise when it moves the held-out loss no more than a training seed does and its importance correlates with fp32's at
least as well as another seed's. Each training runs in its own process (accelerate's state,
and with it the mixed-precision setting, is one per process). Run alone, from the repository root, after
`dvc repro general_importance warmup_llm`:
    python benchmarks/bf16_quality.py [--out benchmarks/results/bf16_quality.json] [--work DIR (reuse its checkpoints)]
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, heldout_blocks, score, study_params  # noqa: E402
from softmask_evidence import machine  # noqa: E402
from das.core import save_json  # noqa: E402


def models(p: dict) -> dict:
    "name -> (general LM folder, continual settings of its study, held-out blocks scored)."
    c = {k: v for k, v in p['continual'].items() if k in ('steps', 'batch_size', 'max_len', 'lr', 'warmup_ratio', 'importance_batches')}
    ev = {k: v for k, v in p['llm']['evidence'].items() if k != 'heldout_blocks'}
    return {'minilm': (ROOT/p['continual']['general_model'], {**c, 'importance_batches': 1}, 128),
            'smollm2': (ROOT/p['llm']['warmup']['out_dir'], {**ev, 'importance_batches': 1}, p['llm']['evidence']['heldout_blocks'])}


def train(general, cfg, domain, out, precision):
    "One NCL domain in a fresh process (kept if `out` holds it already); returns its history's seconds and steps."
    if (Path(out)/f'0-{domain}'/'history.json').exists(): return history(out, domain)
    code = ("import json, sys; from das.continual import run_continual; "
            f"m = run_continual('ncl', [{domain!r}], {str(general)!r}, {str(out)!r}, {json.dumps({**cfg, 'precision': precision})}, "
            "progress=False, until=0); print(json.dumps(m['checkpoints'][0]))")
    env = {**os.environ, 'OMP_NUM_THREADS': '2'}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode: raise SystemExit(r.stderr[-3000:])
    return history(out, domain)


def history(out, domain):
    h = json.loads((Path(out)/f'0-{domain}'/'history.json').read_text())
    return {'train_seconds': h['seconds'], 'steps': len(h['step']), 'step_seconds_mean': h['seconds'] / len(h['step']),
            'loss_first_last': [h['mlm'][0], h['mlm'][-1]]}


def importance_pair(general, p):
    "General importance (proxy KL) of `general` in fp32 and in bf16, same batches and seeds; Pearson r per kind and overall."
    from das.continual import domain_blocks
    from das.dap import block_loader
    from das.family import is_causal
    from das.importance import compute_importance
    from das.model import load_lm
    gi = p['llm']['general_importance'] if 'llm' in str(general) else p['general_importance']
    m, tok = load_lm(general, verbose=False)
    causal, n = is_causal(m), gi['importance_batches'] * gi['batch_size']
    blocks = domain_blocks(tok, gi['corpus'], n, gi['max_len'], 1000, causal=causal)
    loader = list(block_loader(blocks, tok.mask_token_id, m.config.vocab_size, n, gi['batch_size'], 1000, causal=causal))
    out, t = {}, {}
    for name, prec, seed in (('fp32', 'fp32', 0), ('bf16', 'bf16', 0), ('fp32_seed1', 'fp32', 1)):
        t0 = time.perf_counter()
        out[name] = compute_importance(m, loader, loss='kl', grad_views=gi['grad_views'], n_positions=gi['n_positions'], seed=seed, precision=prec)
        t[name] = time.perf_counter() - t0
    def pearson(q):
        r = {k: float(np.corrcoef(out['fp32'][k].flatten().numpy(), out[q][k].flatten().numpy())[0, 1]) for k in out['fp32']}
        flat = [torch.cat([v.flatten() for v in out[x].values()]).numpy() for x in ('fp32', q)]
        return {**r, 'all': float(np.corrcoef(*flat)[0, 1])}
    return {'pearson': pearson('bf16'), 'pearson_seed1': pearson('fp32_seed1'), 'seconds': t, 'blocks': n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/bf16_quality.json'))
    ap.add_argument('--only', nargs='*', default=None, help='models to check (default: minilm smollm2)')
    ap.add_argument('--work', default=None, help='folder of the trained checkpoints (kept; reused when present)')
    a = ap.parse_args(argv)
    from das.evaluate import paired_difference
    from das.model import load_lm
    p = study_params(); torch.set_num_threads(p['base'].get('num_threads') or 2)
    domain = p['continual']['order'][0]
    res = {'machine': machine(), 'domain': domain, 'models': {}}
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix='bf16_quality_'))
    for name, (general, cfg, n_held) in models(p).items():
        if a.only and name not in a.only: continue
        if not general.exists(): raise SystemExit(f'{general} is missing: run `dvc repro general_importance warmup_llm` first')
        r = {'general_lm': str(general.relative_to(ROOT)), 'config': cfg, 'train': {}}
        for run, prec, seed in (('fp32', 'fp32', cfg.get('seed', 0)), ('bf16', 'bf16', cfg.get('seed', 0)), ('fp32_seed1', 'fp32', 1)):
            r['train'][run] = train(general, {**cfg, 'seed': seed}, domain, work/name/run, prec)
            print(f"{name} {run}: {r['train'][run]['step_seconds_mean']:.3f} s per step ({r['train'][run]['steps']} steps)", flush=True)
        r['step_ratio_fp32_over_bf16'] = r['train']['fp32']['step_seconds_mean'] / r['train']['bf16']['step_seconds_mean']
        tok = load_lm(general, verbose=False)[1]
        blocks = {c: b.select(range(min(n_held, len(b)))) for c, b in heldout_blocks(tok, ('general', domain), cfg['max_len']).items()}
        L = {run: score(work/name/run/f'0-{domain}', blocks, tok, seeds=(0, 1)) for run in r['train']}
        r['bf16_minus_fp32'] = {c: paired_difference(L['bf16'][c], L['fp32'][c]) for c in blocks}
        r['seed1_minus_fp32'] = {c: paired_difference(L['fp32_seed1'][c], L['fp32'][c]) for c in blocks}
        r['importance'] = importance_pair(general, p)
        r['holds'] = {'loss_within_2se': all(abs(d['diff']) < 2 * d['se'] for d in r['bf16_minus_fp32'].values()),
                      'importance_r_above_0.99': all(v > 0.99 for v in r['importance']['pearson'].values()),
                      'loss_within_seed_change': all(abs(r['bf16_minus_fp32'][c]['diff']) <= abs(r['seed1_minus_fp32'][c]['diff']) for c in blocks),
                      'importance_r_at_least_seed1': all(r['importance']['pearson'][k] >= v for k, v in r['importance']['pearson_seed1'].items())}
        res['models'][name] = r
        print(f"{name}: bf16 - fp32 held-out loss " + ', '.join(f"{c} {d['diff']:+.4f} +- {d['se']:.4f}" for c, d in r['bf16_minus_fp32'].items())
              + "; seed 1 - seed 0 " + ', '.join(f"{c} {d['diff']:+.4f} +- {d['se']:.4f}" for c, d in r['seed1_minus_fp32'].items())
              + f"; importance r {r['importance']['pearson']} (seed 1: {r['importance']['pearson_seed1']}); step fp32/bf16 x{r['step_ratio_fp32_over_bf16']:.2f}; holds {r['holds']}", flush=True)
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print('written', a.out)
    return res


if __name__ == '__main__':
    main()
