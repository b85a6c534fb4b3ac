"""First evidence on the real model: does the soft-mask protect general knowledge under AdamW, in the gradient form
(the paper's code) or in the update form (ours)?

From the general LM (models/general) with the general importance (models/importance_general.pt), one domain (the
first of params.yaml's continual.order), the study's settings (params.yaml `continual`: steps, batch, block length,
lr, warm-up), no contrast, three runs through the study's own loop (das.continual.run_continual, stage 0 only):
  ncl            plain MLM
  grad_mask      DAS without contrast, soft-mask on the gradient (softmask: grad, what the reference code does)
  update_mask    DAS without contrast, soft-mask on AdamW's update (softmask: update, ours)
Then the held-out MLM loss of the general LM and of each run, on the general corpus and on the trained domain:
every held-out block, several mask seeds, the same blocks and masks for every model (das.evaluate.mlm_block_losses),
each loss with its standard error and each comparison as a paired difference with its standard error
(das.evaluate.paired_difference). Held-out corpora only; no end task is touched.

Run from the repository root after `dvc repro general_importance`:
    python benchmarks/softmask_evidence.py [--seeds 0 1 2 3] [--out benchmarks/results/softmask_evidence.json]
"""
from __future__ import annotations
import argparse, os, platform, sys, tempfile, time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, dap_config, heldout_blocks, score, study_params  # noqa: E402
from das.continual import make_method, run_continual  # noqa: E402
from das.core import save_json  # noqa: E402
from das.evaluate import block_mean, paired_difference  # noqa: E402
from das.model import load_mlm  # noqa: E402

RUNS = {'ncl': ('ncl', {}),
        'grad_mask': ('das', {'contrast': 'none', 'softmask': 'grad'}),
        'update_mask': ('das', {'contrast': 'none', 'softmask': 'update'})}
COMPARE = [('grad_mask', 'ncl'), ('update_mask', 'ncl'), ('update_mask', 'grad_mask')]


def machine() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    return {'nproc': os.cpu_count(), 'cpu_model': cpu, 'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
            'loadavg_start': os.getloadavg()}


def compare(res: dict, losses: dict, models, blocks):
    "Fill res['loss'], ['accuracy'], ['vs_general_lm'], ['paired'] per corpus from per-block losses of every model."
    for cor in blocks:
        res['loss'][cor] = {n: block_mean(losses[n][cor]) for n in models}
        res['accuracy'][cor] = {n: block_mean(losses[n][cor], 'accuracy') for n in models}
        res['vs_general_lm'][cor] = {n: paired_difference(losses[n][cor], losses['general_lm'][cor]) for n in RUNS}
        res['paired'][cor] = {f'{x} - {y}': paired_difference(losses[x][cor], losses[y][cor]) for x, y in COMPARE}


def print_losses(res: dict, models, blocks, unit: str):
    "Each corpus's held-out loss per model, its change from the general LM and the paired comparisons."
    for cor in blocks:
        b = next(iter(res['loss'][cor].values()))
        print(f"  {cor}: {b['n_blocks']} blocks, {b['n_masked']} {unit}")
        for n in models:
            l = res['loss'][cor][n]; d = res['vs_general_lm'][cor].get(n)
            extra = f"   vs general LM {d['diff']:+.4f} +- {d['se']:.4f}" if d else ''
            print(f"    {n:12s} {l['mean']:.4f} +- {l['se']:.4f}{extra}")
        for k, d in res['paired'][cor].items():
            print(f"    {k:24s} {d['diff']:+.4f} +- {d['se']:.4f}  (z = {d['z']:+.1f}: {'resolved' if abs(d['z']) > 2 else 'NOT resolved'} at 2 SE)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3], help='mask seeds of the held-out evaluation')
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/softmask_evidence.json'))
    ap.add_argument('--work', default=None, help='folder for the three runs (default: a temporary folder)')
    a = ap.parse_args(argv)
    params = study_params()
    c = params['continual']
    cfg = dap_config(params)
    general, imp_file, domain = ROOT/c['general_model'], ROOT/c['general_importance'], c['order'][0]
    for f in (general, imp_file):
        if not f.exists(): raise SystemExit(f'{f} is missing: run `dvc repro general_importance` first')
    res = {'machine': machine(), 'domain': domain, 'config': vars(cfg), 'mask_seeds': a.seeds, 'runs': {}, 'loss': {}, 'accuracy': {},
           'vs_general_lm': {}, 'paired': {}}
    work = Path(a.work or tempfile.mkdtemp(prefix='softmask_evidence_'))
    models = {'general_lm': general}
    for name, (method, p) in RUNS.items():
        t0 = time.perf_counter()
        m = make_method(method, p) if p else make_method(method)
        run_continual(m, [domain], general, work/name, cfg, general_importance=imp_file, progress=False, until=0)
        res['runs'][name] = {'method': method, 'params': p, 'seconds': time.perf_counter() - t0}
        models[name] = work/name/f'0-{domain}'
        print(f'trained {name:12s} {res["runs"][name]["seconds"]:6.0f} s', flush=True)
    tok = load_mlm(general, verbose=False)[1]
    blocks = heldout_blocks(tok, ('general', domain), cfg.max_len)
    losses = {}
    t0 = time.perf_counter()
    for name, path in models.items():
        losses[name] = score(path, blocks, tok, a.seeds)
    res['eval_seconds'] = time.perf_counter() - t0
    compare(res, losses, models, blocks)
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print(f"\nheld-out MLM loss (nats per masked token, mean +- SE over blocks; {len(a.seeds)} mask seeds), domain {domain}:")
    print_losses(res, models, blocks, 'masked tokens')
    print(f"\ntraining {sum(r['seconds'] for r in res['runs'].values()):.0f} s, evaluation {res['eval_seconds']:.0f} s; written {a.out}")
    return res


if __name__ == '__main__':
    main()
