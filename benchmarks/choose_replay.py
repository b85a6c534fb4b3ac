"""Choose replay's share r on held-out loss (never on an end task).

For each candidate share, train `replay` on the first two domains of params.yaml's continual.order from the general
LM with the study's settings (params.yaml `continual`), then measure the held-out MLM loss of the final checkpoint on
the general corpus and on both domains (das.evaluate.mlm_block_losses: the same blocks and masks for every
candidate). The criterion is the final average held-out loss over the three corpora (the general knowledge and both
domains weigh alike): the share that keeps the most of everything the model should know. Paired differences with the
best share, with standard errors, say whether the choice is resolved. The result goes to
benchmarks/results/replay_share.json; params.yaml's `methods.replay.share` is set from it by hand (and says so).

    python benchmarks/choose_replay.py [--shares 0.1 0.25 0.5] [--seeds 0 1] [--max-blocks 128]
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, dap_config, heldout_blocks, score, study_params  # noqa: E402
from das.continual import make_method, run_continual  # noqa: E402
from das.core import save_json  # noqa: E402
from das.evaluate import block_mean, paired_difference  # noqa: E402
from das.model import load_mlm  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shares', type=float, nargs='+', default=[0.1, 0.25, 0.5])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1], help='mask seeds of the held-out evaluation')
    ap.add_argument('--max-blocks', type=int, default=128, help='held-out blocks per corpus (the first ones)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/replay_share.json'))
    ap.add_argument('--work', default=None)
    a = ap.parse_args(argv)
    params = study_params()
    c = params['continual']
    cfg = dap_config(params)
    general, order = ROOT/c['general_model'], c['order'][:2]
    if not general.exists(): raise SystemExit(f'{general} is missing: run `dvc repro warmup` first')
    work = Path(a.work or tempfile.mkdtemp(prefix='choose_replay_'))
    tok = load_mlm(general, verbose=False)[1]
    corpora = ['general'] + order
    blocks = heldout_blocks(tok, corpora, cfg.max_len)
    res = {'order': order, 'config': vars(cfg), 'mask_seeds': a.seeds, 'max_blocks': a.max_blocks, 'shares': {},
           'criterion': 'final average held-out MLM loss over the general corpus and the trained domains', 'cpu': os.cpu_count()}
    losses = {}
    for r in a.shares:
        t0 = time.perf_counter()
        run_continual(make_method('replay', {'share': r}), order, general, work/f'r{r}', cfg, progress=False)
        losses[r] = score(work/f'r{r}'/f'{len(order) - 1}-{order[-1]}', blocks, tok, a.seeds, a.max_blocks)
        per = {cor: block_mean(losses[r][cor]) for cor in corpora}
        res['shares'][str(r)] = {'loss': per, 'average': float(np.mean([v['mean'] for v in per.values()])),
                                 'seconds': time.perf_counter() - t0}
        save_json({**res, 'partial': True}, a.out)       # what finished so far survives an interrupted run
        print(f"share {r}: " + ', '.join(f"{cor} {v['mean']:.4f} +- {v['se']:.4f}" for cor, v in per.items())
              + f"; average {res['shares'][str(r)]['average']:.4f} ({res['shares'][str(r)]['seconds']:.0f} s)", flush=True)
    best = min(a.shares, key=lambda r: res['shares'][str(r)]['average'])
    res['best'] = best
    res['vs_best'] = {str(r): {cor: paired_difference(losses[r][cor], losses[best][cor]) for cor in corpora} for r in a.shares if r != best}
    save_json(res, a.out)
    print(f"\nbest share on held-out loss: {best}")
    for r, d in res['vs_best'].items():
        print(f"  share {r} - share {best}: " + ', '.join(f"{cor} {v['diff']:+.4f} +- {v['se']:.4f}" for cor, v in d.items()))
    print(f'written {a.out}')
    return res


if __name__ == '__main__':
    main()
