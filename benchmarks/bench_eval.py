"""What one evaluation of a MiniLM checkpoint costs, where the time goes, and whether it gives the committed numbers.

Run from the repository root, alone on the machine, after `dvc repro warmup` (models/general):
    python benchmarks/bench_eval.py [--out benchmarks/results/eval_cost.json]

It evaluates the general LM (models/general: the `base` row of the study) with the evaluate stage's settings
(params.yaml `evaluate`: every domain task + trec, probe protocol, 3 probe seeds, dev scored, 2 mask seeds x 128
held-out blocks of every corpus), timing the encoding of task texts, the linear probes and the held-out MLM loss, and
compares every number with the committed `results/eval/base.json` (its first row): probe macro-F1 and accuracy per task
and seed, and the held-out loss per corpus and per block. A general LM rebuilt on another CPU differs from the committed
one by float rounding (its warm-up's losses agree to ~1e-7), so the comparison reports the largest differences.
Last, the encoder's FLOP/s on one task's training texts (torch's FlopCounterMode) against the fp32 GEMM peak.
"""
from __future__ import annotations
import argparse, os, sys, time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from bench_das import machine  # noqa: E402
from bench_mfu import gemm_peak  # noqa: E402
from common import study_params  # noqa: E402
import das.evaluate as ev  # noqa: E402
from das.core import load_json, save_json  # noqa: E402
from das.data import load_task  # noqa: E402
from das.model import load_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(spent: dict, name: str, fn):
    "fn, adding its wall time to spent[name]."
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try: return fn(*a, **kw)
        finally: spent[name] += time.perf_counter() - t
    return wrapper


def compare(row: dict, ref: dict) -> dict:
    "Largest differences between two evaluate_model rows, and whether the probe scores are identical."
    d = {'probe_identical': all(row['tasks'][t][m] == ref['tasks'][t][m] for t in ref['tasks'] for m in ('macro_f1', 'accuracy')),
         'probe_max_abs_diff': max(abs(a - b) for t in ref['tasks'] for m in ('macro_f1', 'accuracy')
                                   for a, b in zip(row['tasks'][t][m], ref['tasks'][t][m])),
         'mlm_loss_max_abs_diff': max(abs(row['mlm'][c]['loss'] - ref['mlm'][c]['loss']) for c in ref['mlm']),
         'mlm_block_loss_sum_max_abs_diff': max(float(np.max(np.abs(np.subtract(row['mlm_blocks'][c]['loss_sum'], ref['mlm_blocks'][c]['loss_sum']))))
                                                for c in ref['mlm_blocks']),
         'mlm_correct_identical': all(row['mlm_blocks'][c]['correct'] == ref['mlm_blocks'][c]['correct'] for c in ref['mlm_blocks'])}
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default=str(ROOT/'models/general'))
    ap.add_argument('--ref', default=str(ROOT/'results/eval/base.json'))
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/eval_cost.json'))
    a = ap.parse_args(argv)
    p = study_params(); e = p['evaluate']
    torch.set_num_threads(p['base'].get('num_threads') or 2)
    ref = load_json(a.ref)
    order = ref['order']; tasks = ref['domain_tasks'] + [t for t in e['extra_tasks'] if t not in ref['domain_tasks']]
    model, tok = load_lm(a.model, verbose=False)
    spent = defaultdict(float)
    patched = {'encode_texts': ev.encode_texts, 'linear_probe': ev.linear_probe, 'mlm_block_losses': ev.mlm_block_losses}
    for k, f in patched.items(): setattr(ev, k, timed(spent, k, f))
    t0 = time.perf_counter()
    try:
        row = ev.evaluate_model(model, tok, tasks, order + ['general'], protocol=e['protocol'], seeds=e['seeds'], max_train=e['max_train'],
                                max_test=e['max_test'], max_len=e['max_len'], mlm_batches=e['mlm_batches'], dev=e['dev'],
                                mlm_seeds=e['mlm_seeds'], mlm_max_blocks=e['mlm_max_blocks'])
    finally:
        for k, f in patched.items(): setattr(ev, k, f)
    total = time.perf_counter() - t0
    texts = list(load_task('pubmed')['train']['text'][:e['max_train']])     # the encoder's share of the fp32 GEMM peak
    with FlopCounterMode(display=False) as fc: ev.encode_texts(model, tok, texts, e['max_len'])
    t1 = time.perf_counter(); ev.encode_texts(model, tok, texts, e['max_len']); enc_s = time.perf_counter() - t1
    peak = gemm_peak(torch.float32)
    encoder = {'texts': len(texts), 'gflop': fc.get_total_flops() / 1e9, 'seconds': enc_s,
               'gflops': fc.get_total_flops() / 1e9 / enc_s, 'fp32_gemm_peak_gflops': peak}
    encoder['share_of_fp32_peak'] = encoder['gflops'] / peak
    res = {'machine': machine(), 'code': ev.code_version(), 'model': str(Path(a.model).relative_to(ROOT)), 'seconds': total,
           'parts_seconds': dict(spent), 'other_seconds': total - sum(spent.values()),
           'committed_seconds': ref['rows'][0]['seconds'], 'vs_committed': compare(row, ref['rows'][0]),
           'task_seconds': {t: row['tasks'][t]['seconds'] for t in row['tasks']}, 'encoder_pubmed_train': encoder}
    res['machine']['loadavg_end'] = os.getloadavg()
    print(f"evaluation of {res['model']}: {total:.1f} s (the committed row: {res['committed_seconds']:.1f} s on the machine that made it)")
    for k, s in spent.items(): print(f"  {k:18s} {s:6.1f} s")
    print(f"  other              {res['other_seconds']:6.1f} s")
    print('vs the committed row:', res['vs_committed'])
    print(f"encoder on pubmed's {len(texts)} training texts: {encoder['gflops']:.0f} GFLOP/s, {100 * encoder['share_of_fp32_peak']:.0f}% of "
          f"the fp32 GEMM peak ({peak:.0f} GFLOP/s) measured after it")
    save_json(res, a.out)
    print('written', a.out)
    return res


if __name__ == '__main__':
    main()
