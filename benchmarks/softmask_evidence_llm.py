"""First evidence on the real decoder: does the soft-mask protect SmolLM2's general knowledge under AdamW, in the
gradient form (the paper's code) or in the update form (ours)? The decoder twin of softmask_evidence.py.

From the decoder's general LM (SmolLM2-135M after its recovery warm-up, `dvc repro warmup_llm`: models/llm/general)
with its general importance (proxy KL with dropout at the unit hook points, `dvc repro general_importance_llm`:
llm/results/importance_general.pt), one domain (the first of params.yaml's continual.order), the settings of
params.yaml `llm.evidence`, no contrast, three runs through the study's own loop (das.continual.run_continual, stage 0):
  ncl            plain next-token training
  grad_mask      DAS without contrast, soft-mask on the gradient (softmask: grad, what the reference code does)
  update_mask    DAS without contrast, soft-mask on AdamW's update (softmask: update, ours)
Then the held-out next-token loss of the general LM and of each run on the general corpus and on the trained domain,
per block (das.evaluate.mlm_block_losses: the same blocks for every model), each loss with its standard error over
blocks and each comparison as a paired difference with its standard error (das.evaluate.paired_difference).
Last, one fp32 training step (NCL, forward + backward + AdamW) of SmolLM2 and of MiniLM (data/base_model) timed alone
in the same process: medians of several steps, 2 threads.

Run from the repository root, alone on the machine:
    python benchmarks/softmask_evidence_llm.py [--out benchmarks/results/softmask_evidence_llm.json]
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, heldout_blocks, score, study_params  # noqa: E402
from softmask_evidence import RUNS, compare, machine, print_losses  # noqa: E402
from das.continual import DapConfig, make_method, run_continual  # noqa: E402
from das.core import save_json  # noqa: E402
from das.model import causal_collate, load_lm, mlm_collator, mlm_loss  # noqa: E402


def step_seconds(model, batch, n: int = 5) -> dict:
    "Median seconds of n fp32 NCL steps (forward, backward, AdamW) on `batch`, after one untimed step."
    model.train(); opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ts = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        mlm_loss(model, batch)[0].backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if i: ts.append(time.perf_counter() - t0)
    return {'median': float(np.median(ts)), 'all': [round(t, 3) for t in ts], 'tokens': int(batch['input_ids'].numel())}


def step_times(general: Path, bs: int, max_len: int) -> dict:
    "One NCL step of SmolLM2 and of MiniLM, fp32, the same batch shape (MiniLM also at the study's 16 x 128)."
    from das.data import base_model_dir, load_corpus
    from das.model import chunk_texts
    out = {}
    m, tok = load_lm(general, verbose=False)
    ids = chunk_texts(tok, load_corpus('general', 'heldout'), max_len)[:bs]['input_ids']
    out['smollm2'] = {**step_seconds(m, causal_collate([{'input_ids': r} for r in ids])), 'batch': [bs, max_len],
                      'params_m': round(sum(p.numel() for p in m.parameters()) / 1e6, 1)}
    del m
    mm, mt = load_lm(base_model_dir(), verbose=False)
    blocks = chunk_texts(mt, load_corpus('general', 'heldout'), max_len)
    for b in (bs, 16):
        batch = mlm_collator(mt, 0.15, seed=0)([{'input_ids': r, 'special_tokens_mask': s} for r, s in
                                                zip(blocks[:b]['input_ids'], blocks[:b]['special_tokens_mask'])])
        out[f'minilm_{b}x{max_len}'] = {**step_seconds(mm, batch), 'batch': [b, max_len],
                                        'params_m': round(sum(p.numel() for p in mm.parameters()) / 1e6, 1)}
    out['ratio_smollm2_to_minilm_same_batch'] = out['smollm2']['median'] / out[f'minilm_{bs}x{max_len}']['median']
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/softmask_evidence_llm.json'))
    ap.add_argument('--work', default=None, help='folder for the three runs (default: a temporary folder)')
    a = ap.parse_args(argv)
    params = study_params()
    torch.set_num_threads(params['base'].get('num_threads') or 2)
    llm, domain = params['llm'], params['continual']['order'][0]
    ev = dict(llm['evidence'])
    n_held = ev.pop('heldout_blocks')
    cfg = DapConfig.from_dict({**ev, 'seed': params['base'].get('seed', 0)})
    general, imp_file = ROOT/llm['warmup']['out_dir'], ROOT/llm['general_importance']['out_path']
    for f, stage in ((general, 'warmup_llm'), (imp_file, 'general_importance_llm')):
        if not f.exists(): raise SystemExit(f'{f} is missing: run `dvc repro {stage}` first')
    res = {'machine': machine(), 'domain': domain, 'config': vars(cfg), 'heldout_blocks': n_held, 'runs': {}, 'loss': {}, 'accuracy': {},
           'vs_general_lm': {}, 'paired': {}, 'general_lm': str(general.relative_to(ROOT)), 'importance': str(imp_file.relative_to(ROOT))}
    work = Path(a.work or tempfile.mkdtemp(prefix='softmask_evidence_llm_'))
    models = {'general_lm': general}
    for name, (method, p) in RUNS.items():
        t0 = time.perf_counter()
        m = make_method(method, p) if p else make_method(method)
        man = run_continual(m, [domain], general, work/name, cfg, general_importance=imp_file, progress=False, until=0)
        hist = __import__('json').loads((Path(man['checkpoints'][0]['path'])/'history.json').read_text())
        res['runs'][name] = {'method': method, 'params': p, 'seconds': time.perf_counter() - t0,
                             'train_seconds': hist['seconds'], 'train_loss_first_last': [hist['mlm'][0], hist['mlm'][-1]]}
        models[name] = work/name/f'0-{domain}'
        print(f'trained {name:12s} {res["runs"][name]["seconds"]:6.0f} s (train loop {hist["seconds"]:.0f} s)', flush=True)
    tok = load_lm(general, verbose=False)[1]
    blocks = {c: b.select(range(min(n_held, len(b)))) for c, b in heldout_blocks(tok, ('general', domain), cfg.max_len).items()}
    losses, t0 = {}, time.perf_counter()
    for name, path in models.items(): losses[name] = score(path, blocks, tok, seeds=(0,))
    res['eval_seconds'] = time.perf_counter() - t0
    compare(res, losses, models, blocks)
    t0 = time.perf_counter()
    res['step_fp32'] = step_times(general, cfg.batch_size, cfg.max_len)
    res['step_seconds_total'] = time.perf_counter() - t0
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print(f"\nheld-out next-token loss (nats per token, mean +- SE over blocks), domain {domain}, {cfg.steps} steps of {cfg.batch_size} x {cfg.max_len}:")
    print_losses(res, models, blocks, 'predicted tokens')
    s = res['step_fp32']
    print("\none fp32 NCL step (median of 5, forward + backward + AdamW, 2 threads):")
    for k, v in s.items():
        if isinstance(v, dict): print(f"  {k:18s} {v['median']:.3f} s  ({v['params_m']} M parameters, batch {v['batch'][0]} x {v['batch'][1]})")
    print(f"  SmolLM2 / MiniLM at the same batch: x{s['ratio_smollm2_to_minilm_same_batch']:.1f}")
    print(f"\ntraining {sum(r['seconds'] for r in res['runs'].values()):.0f} s, evaluation {res['eval_seconds']:.0f} s; written {a.out}")
    return res


if __name__ == '__main__':
    main()
