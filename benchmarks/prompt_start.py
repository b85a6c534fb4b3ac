"""Why does DAP-Prompt end with negative adaptation? Score the frozen general LM without a prompt, with the prompt as it
starts (random vocabulary vectors, the run's seed) and with each domain's trained prompt, on the same held-out blocks and
masks as the study's evaluation (up to 128 blocks, mask seeds 0 and 1).

    python benchmarks/prompt_start.py [--run models/runs/prompt] [--max-blocks 128] [--out benchmarks/results/prompt_start.json]

Needs the prompt run's checkpoints (`dvc repro train@prompt`). Prints, per corpus, each condition minus the no-prompt LM
(nats per token, paired SE over blocks: das.evaluate.paired_difference); writes them as JSON. No DVC stage depends on it.
"""
from __future__ import annotations
import sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, checkpoint_args, heldout_blocks, minus, score  # noqa: E402


from das.cl_plugins import SoftPrompt, load_with_plugins  # noqa: E402
from das.core import save_json  # noqa: E402
from das.model import load_mlm  # noqa: E402


def main(argv=None):
    a, run, P = checkpoint_args(__doc__, 'prompt', 'benchmarks/results/prompt_start.json', argv)
    seeds, n = P['evaluate']['mlm_seeds'], P['methods']['prompt']['length']
    t0 = time.time()
    model, tok = load_mlm(ROOT/'models'/'general', verbose=False); model.eval()
    cks = sorted(p for p in run.iterdir() if p.is_dir() and (p/'prompt.safetensors').exists())
    order = [c.name.split('-', 1)[1] for c in cks]
    blocks = heldout_blocks(tok, order + ['general'], P['continual']['max_len'])
    lm = score(model, blocks, tok, seeds, a.max_blocks)
    SoftPrompt(model, n, seed=P['base'].get('seed', 0)).attach(model)   # the prompt as DapPrompt.before_run builds it
    start = score(model, blocks, tok, seeds, a.max_blocks)
    out = {'seeds': seeds, 'max_blocks': a.max_blocks, 'prompt_length': n,
           'general_lm': {c: float(sum(map(sum, v['loss_sum'])) / sum(map(sum, v['n']))) for c, v in lm.items()},
           'untrained_minus_lm': {c: minus(start[c], lm[c]) for c in lm}, 'trained_minus_lm': {}}
    for ck, dom in zip(cks, order):                 # each checkpoint (frozen LM + its trained prompt) on its domain and on general text
        trained = load_with_plugins(ck, verbose=False)[0].eval()
        sc = score(trained, {c: blocks[c] for c in (dom, 'general')}, tok, seeds, a.max_blocks)
        out['trained_minus_lm'][ck.name] = {c: minus(v, lm[c]) for c, v in sc.items()}
    out['seconds'] = round(time.time() - t0, 1)
    fmt = lambda d: f"{d['mean']:+.4f} +- {d['se']:.4f}"
    print(f"prompt of {n} vectors on the frozen general LM; held-out loss minus the LM's without a prompt (nats/token, paired over blocks)")
    for ck, dom in zip(cks, order):
        u, t = out['untrained_minus_lm'], out['trained_minus_lm'][ck.name]
        print(f"{ck.name:>14}: own domain untrained {fmt(u[dom])}, trained {fmt(t[dom])}; general untrained {fmt(u['general'])}, trained {fmt(t['general'])}")
    print(f"{out['seconds']} s")
    save_json(out, ROOT/a.out)


if __name__ == '__main__': main()
