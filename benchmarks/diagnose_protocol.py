"""Issue 4 diagnosis: does DAS trail NCL only under the frozen probe? The final checkpoints scored by fine-tuning.

Run from the repository root, after the train stages of the methods named (models/runs/<method>/run.json):

    python benchmarks/diagnose_protocol.py --methods base ncl das --seeds 0 1 [--out benchmarks/results/protocol.json]

For each method, the checkpoint after the last domain (`base`: models/general) is scored on the six domain end tasks
with the paper's protocol (a fresh copy of the encoder plus a classifier fine-tuned per task and seed: 5 epochs,
lr 3e-5, batch 16, last epoch taken; das.evaluate.finetune), on the same subsamples as the study's probe (1000
training, 500 test and 500 dev examples per task, 64 tokens). Printed: macro-F1 per task and method on **dev** (the split to
draw conclusions on) and on test, mean +- std over seeds, beside the probe's figures for the same
checkpoint from results/eval/<method>.json where present, as the report's table (das.report.protocol_markdown).
Saved atomically, per method and task (runs on other tasks merge in): the fine-tuning scores (das.evaluate.evaluate_model
`tasks` entries) and the probe's per-seed scores (`probe`: dev and test). Nothing here chooses a setting: it asks
whether the ranking of methods depends on the protocol.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
from das.data import DEFAULT_ORDER as DOMAIN_TASKS   # the six domains; each has its end task of the same name


def final_checkpoint(method: str) -> Path:
    "The model folder after the last domain of a trained method (`base`: the general LM)."
    from das.core import DasError
    if method == 'base': return ROOT/'models'/'general'
    run = ROOT/'models'/'runs'/method/'run.json'
    if not run.exists(): raise DasError(f"{run} does not exist", f"train the method first: dvc repro train@{method}")
    return ROOT/json.loads(run.read_text())['checkpoints'][-1]['model']


def probe_scores(method: str, task: str) -> dict | None:
    "The probe protocol's per-seed macro-F1 of `task` after the last domain ({'dev', 'test'}; results/eval/<method>.json), or None."
    p = ROOT/'results'/'eval'/f'{method}.json'
    if not p.exists(): return None
    t = json.loads(p.read_text())['rows'][-1]['tasks'][task]
    return {'dev': t['dev']['macro_f1'], 'test': t['macro_f1']}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', nargs='+', default=['base', 'ncl', 'das'])
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    ap.add_argument('--tasks', nargs='+', default=list(DOMAIN_TASKS), choices=DOMAIN_TASKS,
                    help='a subset of the domain tasks (one fine-tuning run of 1000 examples x 5 epochs is ~4 min here)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'protocol.json'))
    a = ap.parse_args(argv)
    import torch
    from das.core import save_json
    from das.evaluate import evaluate_model
    from das.model import load_mlm
    from das.report import protocol_comparison, protocol_markdown
    torch.set_num_threads(2)
    ckpts = {m: final_checkpoint(m) for m in a.methods}          # refuse a missing run before any fine-tuning
    out = Path(a.out); res = json.loads(out.read_text()) if out.exists() else {}
    print('load average at start:', os.getloadavg(), flush=True)
    for m, ck in ckpts.items():
        t0 = time.time()
        model, tok = load_mlm(ck, verbose=False)
        r = evaluate_model(model, tok, tasks=a.tasks, corpora=(), protocol='paper', seeds=a.seeds, dev=True, progress=True)
        e = res.setdefault(m, {'finetune': {}, 'probe': {}})
        e['checkpoint'] = str(ck.relative_to(ROOT)); e['settings'] = r['settings']
        e['finetune'].update(r['tasks']); e['probe'].update({n: probe_scores(m, n) for n in a.tasks})
        save_json(res, out)                                          # atomic; results of other tasks/methods kept
        print(f'{m}: {(time.time() - t0) / 60:.1f} min', flush=True)
    print(protocol_markdown(protocol_comparison({m: res[m] for m in a.methods})))   # the report's own table
    print('load average at end:', os.getloadavg())


if __name__ == '__main__':
    main()
