"""Trade-off curves on held-out loss: how much a method adapts against how much it forgets, as one knob turns.

Each config trains the first two domains of params.yaml's continual.order from the general LM (the study's settings,
with the config's overrides), then every checkpoint and the general LM are scored by the held-out MLM loss per block
(das.evaluate.mlm_block_losses: the same blocks and masks for all), and das.evaluate.knowledge gives adaptation,
domain forgetting and general forgetting with standard errors. Held-out corpora only; no end task is touched. The
per-block sums of every checkpoint (`rows`) and of the general LM (`general`) are saved too, so two configs can be
compared paired, block by block (das.report's trade-off comparison at equal adaptation).
The defaults are the two curves of the study: NCL over its learning rate (4 values: every DAS point fell between
3e-5 and 1e-4, so 5e-5 shortens the interpolation) and DAS over its mask strength
(`strength`: the soft mask protects with min(1, strength x importance)). The report draws them into its
stability-plasticity figure from benchmarks/results/tradeoff.json.

    python benchmarks/tradeoff.py [--configs NAME=METHOD[,key=value...] ...] [--seeds 0 1] [--max-blocks 128]

A key that is a continual setting (lr, steps, ...) overrides params.yaml's `continual`; any other key is a parameter of
the method (on top of params.yaml's `methods.<METHOD>` when METHOD is a name there). Finished configs are kept (the
JSON is rewritten after each one) and skipped on a rerun.
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, dap_config, heldout_blocks, method_params, parse_spec, score, study_params  # noqa: E402
from das.continual import make_method, run_continual  # noqa: E402
from das.core import load_json, save_json  # noqa: E402
from das.evaluate import knowledge  # noqa: E402
from das.model import load_mlm  # noqa: E402

DEFAULT = ['ncl_lr3e-5=ncl,lr=3e-5', 'ncl_lr5e-5=ncl,lr=5e-5', 'ncl_lr1e-4=ncl', 'ncl_lr3e-4=ncl,lr=3e-4',   # 5e-5: where DAS's points fall
           'das_s0.5=das,strength=0.5', 'das_s1=das', 'das_s2=das,strength=2.0']


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--configs', nargs='+', default=DEFAULT)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1], help='mask seeds of the held-out evaluation')
    ap.add_argument('--max-blocks', type=int, default=128, help='held-out blocks per corpus (the first ones)')
    ap.add_argument('--domains', type=int, default=2, help='the first N domains of the order')
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/tradeoff.json'))
    ap.add_argument('--work', default=None)
    a = ap.parse_args(argv)
    params = study_params()
    c = params['continual']
    base_cfg = dap_config(params)
    general, order = ROOT/c['general_model'], c['order'][:a.domains]
    imp_file = ROOT/c['general_importance']
    if not general.exists() or not imp_file.exists(): raise SystemExit('run `dvc repro general_importance` first')
    runs = []                                                 # check every config before any training
    for spec in a.configs:
        name, method, meth, cfg_over = parse_spec(spec)
        mp = method_params(method, meth, params)
        runs.append((spec, name, method, make_method(method, mp), mp, cfg_over, dap_config(params, **cfg_over)))
    work = Path(a.work or tempfile.mkdtemp(prefix='tradeoff_'))
    tok = load_mlm(general, verbose=False)[1]
    blocks = heldout_blocks(tok, order + ['general'], base_cfg.max_len)
    def row(model_dir):                                       # a row of das.evaluate.knowledge: per-block sums over mask seeds
        return {'mlm_blocks': {cor: {k: v.sum(0).tolist() for k, v in b.items()}
                               for cor, b in score(model_dir, blocks, tok, a.seeds, a.max_blocks).items()}}
    res = load_json(a.out) if Path(a.out).exists() else {}
    res.setdefault('configs', {})
    if res.get('order') not in (None, order) or res.get('mask_seeds') not in (None, a.seeds):
        raise SystemExit(f'{a.out} holds another order or seeds: move it away first')
    res.update(order=order, mask_seeds=a.seeds, max_blocks=a.max_blocks, cpu=os.cpu_count())
    G = res.get('general') or row(general)
    res['general'] = G                                        # the general LM's row: with `rows`, paired comparisons between configs
    for spec, name, method, m, mp, cfg_over, cfg in runs:
        if name in res['configs']: print(f'{name}: done before, skipped'); continue
        t0 = time.perf_counter()
        run_continual(m, order, general, work/name, cfg, general_importance=imp_file, progress=False)
        rows = [row(work/name/f'{t}-{d}') for t, d in enumerate(order)]
        k = knowledge(rows, G, order)
        res['configs'][name] = {'spec': spec, 'method': method, 'params': mp, 'config': cfg_over, 'knowledge': k, 'rows': rows,
                                'seconds': time.perf_counter() - t0}
        save_json(res, a.out)
        print(f'{name}: ' + ', '.join(f"{m.replace('_', ' ')} {k[m]['mean']:.4f} +- {k[m]['se']:.4f}"
                                      for m in ('adaptation', 'domain_forgetting', 'general_forgetting') if m in k)
              + f' ({time.perf_counter() - t0:.0f} s)', flush=True)
    print(f'written {a.out}')
    return res


if __name__ == '__main__':
    main()
