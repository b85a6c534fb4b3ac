"""Issue 4 diagnosis: which DAS setting costs it against NCL? Short runs compared on the dev split only.

Run from the repository root, after `dvc repro warmup general_importance`:

    python benchmarks/diagnose_das.py [--domains 1] [--seeds 0 1 2] [--configs ncl=ncl das=das das_lam0.1=das,lam=0.1 ...]

The study's DAS trails NCL already after its first domain (results/eval/<method>.json, `A_dev`), and the ablation
without the contrastive term scores like NCL, so one domain is enough to compare settings at ~1/6 of a study run's
cost. Each config `label=plugin[,key=value...]` runs `run_continual` over the first `--domains` domains of
`continual.order` (keys of das.continual.DapConfig, e.g. steps or lr, change the shared settings; the others are the
method's parameters over `methods.<plugin>` of params.yaml), then its last checkpoint is scored with the study's probe
(`evaluate` group of params.yaml: same subsamples, seeds, max_len) on the six domain end tasks and on TREC, plus the
held-out MLM loss on the general corpus and on the domains trained. Printed: **dev** macro-F1 only (the split settings
are chosen on; test scores are saved beside it, for after a choice is made), mean over the seeds per task, the mean
over the six domain tasks and its difference from the config labelled `ncl` in the same run. Saved atomically after
each config (a config already in --out with the same spec is not rerun). The run's checkpoints are temporary.
"""
from __future__ import annotations
import argparse, dataclasses, json, os, sys, tempfile, time
from statistics import mean
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import ROOT, dap_config, method_params, parse_spec, study_params  # noqa: E402
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

DEFAULT_CONFIGS = ['ncl=ncl', 'das=das', 'das_lam0.3=das,lam=0.3', 'das_lam0.1=das,lam=0.1', 'das_tau0.2=das,tau=0.2']


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS, help='label=plugin[,key=value...]; label `ncl` is the reference')
    ap.add_argument('--domains', type=int, default=1, help='the first N domains of continual.order')
    ap.add_argument('--seeds', nargs='+', type=int, default=None, help='probe seeds (default: evaluate.seeds)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'das_settings.json'))
    a = ap.parse_args(argv)
    import torch
    from das.continual import make_method, run_continual
    from das.core import DasError, save_json
    from das.evaluate import evaluate_model
    from das.model import load_mlm
    from das.report import settings_markdown, settings_table
    p = study_params()
    torch.set_num_threads(int(p['base'].get('num_threads') or 2))
    ev = p['evaluate']; seeds = a.seeds or ev['seeds']
    order = list(p['continual']['order'])
    if not 1 <= a.domains <= len(order): raise DasError(f"--domains {a.domains} is not in 1..{len(order)}", f"use 1 to {len(order)}")
    runs = []                                                         # check every config before any training
    for spec in a.configs:
        label, plugin, meth, cfg = parse_spec(spec)
        run_str = spec.split('=', 1)[1]
        method = make_method(plugin, method_params(plugin, meth, p))   # refuses an unknown method or parameter, now
        c = dap_config(p, **cfg)
        runs.append((label, method, c, {'plugin': method.name, 'params': method.params, 'config': dataclasses.asdict(c),
                                        'order': order[:a.domains], 'domain_tasks': order, 'seeds': seeds}, run_str))
    gi = ROOT/p['continual']['general_importance']; gm = ROOT/p['continual']['general_model']
    if not gi.exists() or not (gm/'config.json').exists():
        raise DasError(f"{gm} or {gi} is missing", "run `dvc repro warmup general_importance` (or `dvc pull`) first")
    out = Path(a.out); res = json.loads(out.read_text()) if out.exists() else {}
    print(f'machine: {os.cpu_count()} cores, load {os.getloadavg()}', flush=True)
    tasks = list(order) + list(ev.get('extra_tasks') or [])
    for label, method, cfg, spec, run_str in runs:
        if res.get(label, {}).get('spec') == spec: print(f'{label}: in {out.name} already', flush=True); continue
        t0 = time.time()
        with tempfile.TemporaryDirectory() as d:
            man = run_continual(method, order, gm, Path(d)/label, cfg, general_importance=gi, progress=False, until=a.domains - 1)
            train_s = time.time() - t0
            model, tok = load_mlm(man['checkpoints'][-1]['model'], verbose=False)
            r = evaluate_model(model, tok, tasks=tasks, corpora=tuple(order[:a.domains]) + ('general',), protocol='probe', seeds=seeds,
                               max_train=ev['max_train'], max_test=ev['max_test'], max_len=ev['max_len'],
                               mlm_batches=ev['mlm_batches'], dev=True)
        res[label] = {'run': run_str, 'spec': spec, 'tasks': r['tasks'], 'mlm': r['mlm'], 'train_seconds': train_s, 'seconds': time.time() - t0}
        save_json(res, out)                                           # atomic, after each config
        print(f'{label}: train {train_s / 60:.1f} min, all {(time.time() - t0) / 60:.1f} min', flush=True)
    show = [l for l, *_ in runs]
    print(f'\ndev macro-F1 per task after {a.domains} domain(s), mean over seeds {seeds}:')
    print(f"{'config':>14} " + ' '.join(f'{n[:9]:>9}' for n in tasks))
    for l in show: print(f'{l:>14} ' + ' '.join(f"{mean(res[l]['tasks'][n]['dev']['macro_f1']):9.4f}" for n in tasks))
    print(settings_markdown(settings_table({l: res[l] for l in show})))   # the report's own table
    print('load at end:', os.getloadavg())
    return res


if __name__ == '__main__':
    main()
