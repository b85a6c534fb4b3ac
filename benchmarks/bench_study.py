"""The study's time budget: the smoke profile end to end, and the default profile's measured stage times.

Run from the repository root:  python benchmarks/bench_study.py [--skip-smoke]

1. Smoke profile (what the tests use): a tiny random BERT with the base tokenizer, all six domains in the default
   order, methods base, one, ncl and das, 2 steps of 4 x 32 tokens per domain, then the evaluation of every
   checkpoint (probe protocol, 3 seeds, 64 train / 64 test examples per task). Wall time, measured here, in a
   temporary folder. Budget: under 2 minutes.
2. Default profile: the wall times that the pipeline's stages recorded (metrics/train/<method>.json written by
   nbs/09b_train, metrics/eval/<method>.json by nbs/09c_evaluate, the general importance from its lab notebook
   timing in runs/) summed per method. Budgets (issue 4): base+one+ncl+das with evaluation <= 90 min; das alone
   <= 45 min. Only stages that have run are counted; missing ones are listed.
3. Full study (--full; run where the full study's stages have run, e.g. a clone with study.methods = study.full):
   warm-up (metrics/warmup.json) + general importance (papermill duration of runs/general_importance.ipynb) +
   every method of params.yaml's study.full, train + evaluate, summed. Budgets: issue 4's methods (all but the five
   systems of issue 6) <= 6 h as one `dvc exp run`; issue 6's five (adapter, prompt, hat, cpt, elle) <= 3 h more.
   A sum of stage records, not one command's wall time: stages advance across sessions through DVC's run-cache.
"""
from __future__ import annotations
import argparse, json, os, resource, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')


def smoke(methods=('base', 'one', 'ncl', 'das')) -> dict:
    import torch
    from das.continual import run_continual, smoke_model_dir
    from das.data import DEFAULT_ORDER
    from das.evaluate import evaluate_model
    from das.model import load_mlm
    torch.set_num_threads(2)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); t0 = time.perf_counter()
        sm = smoke_model_dir(d/'general')
        cfg = dict(steps=2, batch_size=4, max_len=32, importance_batches=1)
        for m in methods:
            t1 = time.perf_counter()
            man = run_continual(m, list(DEFAULT_ORDER), sm, d/m, cfg, general_importance=d/'imp.pt', progress=False)
            t2 = time.perf_counter(); seen = {}
            for c in man['checkpoints']:
                if c['model'] in seen: continue
                model, tok = load_mlm(c['model'], verbose=False)
                seen[c['model']] = evaluate_model(model, tok, max_train=64, max_test=64, max_len=32, mlm_batches=1)
            out[m] = {'train_s': t2 - t1, 'eval_s': time.perf_counter() - t2}
            print(f'  smoke {m:5s} train {out[m]["train_s"]:6.1f} s   evaluate {out[m]["eval_s"]:6.1f} s', flush=True)
        out['total_s'] = time.perf_counter() - t0
    return out


def default_profile(methods=('base', 'one', 'ncl', 'das')) -> dict:
    "The methods' train and evaluate records (das.report.cost_table, the report's reader), in seconds; methods lacking either listed."
    from das.report import cost_table
    ct = cost_table(ROOT/'metrics', list(methods), domains=1).dropna(subset=['evaluate_min'])
    res = {r.method: {'train_s': r.train_min * 60, 'eval_s': r.evaluate_min * 60,
                      'peak_rss_mib': None if r.peak_rss_gib != r.peak_rss_gib else r.peak_rss_gib * 1024} for r in ct.itertuples()}
    return {'methods': res, 'missing': [m for m in methods if m not in res]}


ISSUE6 = ('adapter', 'prompt', 'hat', 'cpt', 'elle')


def full_study() -> dict:
    "Measured stage times of the full study (seconds), from the stages' own records; missing methods listed."
    import yaml
    full = yaml.safe_load((ROOT/'params.yaml').read_text())['study']['full']
    w = ROOT/'metrics'/'warmup.json'
    gi = ROOT/'runs'/'general_importance.ipynb'
    shared = {'warmup': json.loads(w.read_text())['seconds']['total'] if w.exists() else None,
              'general_importance': json.loads(gi.read_text())['metadata']['papermill']['duration'] if gi.exists() else None}
    d = default_profile(full)
    return {'shared': shared, **d}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--skip-smoke', action='store_true')
    ap.add_argument('--full', action='store_true', help="also sum the full study's stage records (study.full)")
    a = ap.parse_args(argv)
    print('load average at start:', os.getloadavg())
    if not a.skip_smoke:
        print('smoke profile (tiny model, six domains, base/one/ncl/das, evaluation included):')
        s = smoke()
        print(f'  smoke total {s["total_s"]:.1f} s  (budget 120 s: {"within" if s["total_s"] <= 120 else "OVER"})')
    d = default_profile()
    print('\ndefault profile, from the stages\' own records (metrics/train, metrics/eval):')
    tot = 0.0
    for m, r in d['methods'].items():
        tot += r['train_s'] + r['eval_s']
        print(f'  {m:5s} train {r["train_s"] / 60:6.1f} min   evaluate {r["eval_s"] / 60:5.1f} min   peak RSS {r["peak_rss_mib"] or 0:6.0f} MiB')
    if 'das' in d['methods']:
        das = d['methods']['das']['train_s'] + d['methods']['das']['eval_s']
        print(f'  das alone {das / 60:.1f} min (budget 45; the general importance stage is extra, see runs/general_importance.ipynb)')
    if d['methods']: print(f'  total of the methods present {tot / 60:.1f} min (budget 90 for base+one+ncl+das)')
    if d['missing']: print('  not run yet:', ', '.join(d['missing']), '(dvc repro)')
    if a.full:
        f = full_study(); sh = sum(v for v in f['shared'].values() if v)
        print('\nfull study (study.full), from the stages\' own records:')
        print('  shared: ' + ', '.join(f'{k} {v / 60:.1f} min' if v else f'{k} not run' for k, v in f['shared'].items()))
        part = {4: 0.0, 6: 0.0}
        for m, r in f['methods'].items():
            t = r['train_s'] + r['eval_s']; part[6 if m in ISSUE6 else 4] += t
            print(f'  {m:15s} train {r["train_s"] / 60:6.1f} min   evaluate {r["eval_s"] / 60:5.1f} min   peak RSS {r["peak_rss_mib"] or 0:6.0f} MiB')
        print(f'  issue 4 methods + shared stages: {(part[4] + sh) / 3600:.2f} h (budget 6 h)')
        print(f'  issue 6 methods: {part[6] / 3600:.2f} h (budget 3 h more)')
        if f['missing']: print('  not run yet:', ', '.join(f['missing']), '(the sums above leave them out)')
    print('load average at end:', os.getloadavg())


if __name__ == '__main__':
    main()
