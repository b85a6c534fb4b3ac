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

A key that is a continual setting (lr, steps, seed, ...) overrides params.yaml's `continual`; any other key is a parameter
of the method (on top of params.yaml's `methods.<METHOD>` when METHOD is a name there), except `run=FOLDER`: the config
was trained already (a pipeline stage's run folder, e.g. models/llm/runs/ncl), so its checkpoints are scored, not
retrained; its run.json must hold the same method, settings and order. `seed=K` trains with another training seed
(data order, masks, dropout): the report compares configs at equal adaptation within a seed, then over seeds. Finished
configs are kept (the JSON is rewritten after each one) and skipped on a rerun.

`--profile llm` draws the decoder's curves: params.yaml's `llm` overlays (SmolLM2 after its warm-up, its general
importance, llm.continual's settings and order), the first three domains, next-token losses on llm.evaluate's
held-out blocks, into benchmarks/results/tradeoff_llm.json; its default configs are NCL and replay over four learning
rates (down to 2e-6 and 1e-6, up to the profile's 1e-4), DAS over three mask strengths and das_replay, the profile's own runs scored, not retrained.
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, dap_config, heldout_blocks, method_params, parse_spec, profile_params, score  # noqa: E402
from das.continual import make_method, run_continual  # noqa: E402
from das.core import DasError, load_json, save_json  # noqa: E402
from das.evaluate import knowledge  # noqa: E402
from das.model import load_lm  # noqa: E402

DEFAULT = ['ncl_lr3e-5=ncl,lr=3e-5', 'ncl_lr5e-5=ncl,lr=5e-5', 'ncl_lr1e-4=ncl', 'ncl_lr3e-4=ncl,lr=3e-4',   # 5e-5: where DAS's points fall
           'das_s0.5=das,strength=0.5', 'das_s1=das', 'das_s2=das,strength=2.0']
LLM = 'models/llm/runs'   # the decoder profile's runs (dvc repro train_llm@<method>): their points scored, not retrained
# The decoder's DAS and das_replay runs adapt a small fraction of what NCL and replay adapt at the profile's lr 1e-4
# (llm/results/eval): at lr 5e-6 NCL and replay still adapt more than DAS (and das_replay) do, so the learning-rate curves
# reach down to 2e-6 (NCL) and 1e-6 (replay), below those points (benchmarks/results/tradeoff_llm.json).
DEFAULT_LLM = ['ncl_lr2e-6=ncl,lr=2e-6', 'ncl_lr5e-6=ncl,lr=5e-6', 'ncl_lr2e-5=ncl,lr=2e-5', f'ncl_lr1e-4=ncl,run={LLM}/ncl',
               'das_s0.5=das,strength=0.5', f'das_s1=das,run={LLM}/das', 'das_s2=das,strength=2.0',
               'replay_lr1e-6=replay,lr=1e-6', 'replay_lr5e-6=replay,lr=5e-6', 'replay_lr2e-5=replay,lr=2e-5',
               f'replay_lr1e-4=replay,run={LLM}/replay',
               f'das_replay=das_replay,run={LLM}/das_replay']
PROFILE = {'study': {'configs': DEFAULT, 'out': 'benchmarks/results/tradeoff.json', 'max_blocks': 128, 'seeds': [0, 1], 'domains': 2},
           'llm': {'configs': DEFAULT_LLM, 'out': 'benchmarks/results/tradeoff_llm.json', 'max_blocks': None, 'seeds': [0], 'domains': 3}}


def check_run(run, m, cfg, order) -> Path:
    "The run folder of a config trained already: refused unless its run.json has the config's method, parameters, settings and order."
    run = ROOT/run
    if not (run/'run.json').exists(): raise DasError(f"no finished run at {run}", "train it first (its pipeline stage) or drop run=")
    man = load_json(run/'run.json')
    if len(man.get('checkpoints', [])) < len(order): raise DasError(f"{run} has {len(man.get('checkpoints', []))} checkpoints for {len(order)} domains", "finish its stage first")
    want = {'method': getattr(m, 'label', m.name), 'params': m.params, 'order': list(order), 'config': cfg.record()}
    got = {'method': man.get('method'), 'params': man.get('params'), 'order': man.get('order', [])[:len(order)], 'config': man.get('config')}
    bad = [k for k in want if want[k] != got[k]]
    if bad: raise DasError(f"{run}: its {', '.join(bad)} differ from the config's ({ {k: got[k] for k in bad} } vs { {k: want[k] for k in bad} })",
                           "drop run= to train the config, or give the settings the run was trained with")
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--profile', choices=list(PROFILE), default='study', help="'llm': the decoder profile (params.yaml `llm`)")
    ap.add_argument('--configs', nargs='+', default=None, help='default: the profile\'s curves')
    ap.add_argument('--seeds', type=int, nargs='+', default=None, help='mask seeds of the held-out evaluation (default: 0 1; llm: 0)')
    ap.add_argument('--max-blocks', type=int, default=None, help="held-out blocks per corpus, the first ones (default: 128; llm: llm.evaluate's)")
    ap.add_argument('--domains', type=int, default=None, help='the first N domains of the order (default: 2; llm: 3)')
    ap.add_argument('--out', default=None)
    ap.add_argument('--work', default=None)
    a = ap.parse_args(argv)
    params = profile_params(a.profile)
    prof = PROFILE[a.profile]
    a.configs = a.configs or prof['configs']
    a.seeds = a.seeds or prof['seeds']
    a.max_blocks = a.max_blocks or prof['max_blocks'] or params['evaluate']['mlm_max_blocks']
    a.domains = a.domains or prof['domains']
    a.out = a.out or str(ROOT/prof['out'])
    c = params['continual']
    base_cfg = dap_config(params)
    general, order = ROOT/c['general_model'], c['order'][:a.domains]
    imp_file = ROOT/c['general_importance']
    if not general.exists() or not imp_file.exists():
        raise SystemExit(f"run `dvc repro {'general_importance' if a.profile == 'study' else 'general_importance_llm'}` first")
    runs = []                                                 # check every config before any training
    for spec in a.configs:
        name, method, meth, cfg_over = parse_spec(spec)
        done = meth.pop('run', None)
        mp = method_params(method, meth, params)
        cfg = dap_config(params, **cfg_over)
        m = make_method(method, mp)
        runs.append((spec, name, method, m, mp, cfg_over, cfg, check_run(done, m, cfg, order) if done else None))
    work = Path(a.work or tempfile.mkdtemp(prefix='tradeoff_'))
    tok = load_lm(general, verbose=False)[1]
    blocks = heldout_blocks(tok, order + ['general'], base_cfg.max_len)
    def row(model_dir):                                       # a row of das.evaluate.knowledge: per-block sums over mask seeds
        return {'mlm_blocks': {cor: {k: v.sum(0).tolist() for k, v in b.items()}
                               for cor, b in score(model_dir, blocks, tok, a.seeds, a.max_blocks).items()}}
    res = load_json(a.out) if Path(a.out).exists() else {}
    res.setdefault('configs', {})
    if res.get('order') not in (None, order) or res.get('mask_seeds') not in (None, a.seeds) or res.get('profile') not in (None, a.profile):
        raise SystemExit(f'{a.out} holds another order, mask seeds or profile: move it away first')
    res.update(order=order, mask_seeds=a.seeds, max_blocks=a.max_blocks, cpu=os.cpu_count(), profile=a.profile)
    G = res.get('general') or row(general)
    res['general'] = G                                        # the general LM's row: with `rows`, paired comparisons between configs
    for spec, name, method, m, mp, cfg_over, cfg, done in runs:
        if name in res['configs']: print(f'{name}: done before, skipped'); continue
        t0 = time.perf_counter()
        if done is None: run_continual(m, order, general, work/name, cfg, general_importance=imp_file, progress=False)
        rows = [row((done or work/name)/f'{t}-{d}') for t, d in enumerate(order)]
        k = knowledge(rows, G, order)
        res['configs'][name] = {'spec': spec, 'method': method, 'params': mp, 'config': cfg_over, 'knowledge': k, 'rows': rows,
                                'seconds': time.perf_counter() - t0, 'seed': cfg.seed,
                                **({'run': str(done.relative_to(ROOT))} if done else {})}
        save_json(res, a.out)
        print(f'{name}: ' + ', '.join(f"{m.replace('_', ' ')} {k[m]['mean']:.4f} +- {k[m]['se']:.4f}"
                                      for m in ('adaptation', 'domain_forgetting', 'general_forgetting') if m in k)
              + f' ({time.perf_counter() - t0:.0f} s)', flush=True)
    print(f'written {a.out}')
    return res


if __name__ == '__main__':
    main()
