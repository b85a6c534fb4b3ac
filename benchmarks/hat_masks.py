"""Why does HAT end with negative adaptation and a general forgetting of about one nat? Separate what its masks switch
off from what its weights learned: the final HAT checkpoint scored on the study's held-out blocks and mask seeds
(up to 128 blocks, seeds 0 and 1) without any mask and under each domain's mask, minus the general LM; and each
domain's mask compared with the task embedding it started from.

    python benchmarks/hat_masks.py [--run models/runs/hat] [--max-blocks 128] [--out benchmarks/results/hat_masks.json]

Needs the HAT run's checkpoints (`dvc repro train@hat`). The study evaluates general text under the last domain's mask
(das.cl_plugins.evaluate_with_task_ids). Prints, per domain, the share of units its mask switches off (< 0.5), the share
whose on/off state differs from the embedding's start e_t ~ N(0, 1) (seed `seed * 1000 + t`, as HAT.before_domain draws
it), and held-out loss differences (nats per token, paired SE over blocks: das.evaluate.paired_difference); writes
them as JSON. No DVC stage depends on it.
"""
from __future__ import annotations
import math, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, checkpoint_args, heldout_blocks, minus, score  # noqa: E402

from safetensors.torch import load_file  # noqa: E402

from das.cl_plugins import TaskMasks, load_with_plugins  # noqa: E402
from das.core import load_json, save_json  # noqa: E402
from das.gates import unit_shapes  # noqa: E402
from das.model import load_mlm  # noqa: E402


def start_embedding(shapes: dict, seed: int) -> dict:
    "The task embedding e_t a domain started from: TaskMasks.start's draw with `seed`."
    m = TaskMasks(shapes); m.start('start', steps=1, seed=seed)
    return {k: v.detach() for k, v in m.e.items()}


def main(argv=None):
    a, run, P = checkpoint_args(__doc__, 'hat', 'benchmarks/results/hat_masks.json', argv)
    seeds, seed = P['evaluate']['mlm_seeds'], P['base'].get('seed', 0)
    t0 = time.time()
    cks = sorted(p for p in run.iterdir() if p.is_dir() and (p/'hat.safetensors').exists())
    last = cks[-1]; meta = load_json(last/'plugin.json'); order = meta['domains']
    general, tok = load_mlm(ROOT/'models'/'general', verbose=False); general.eval()
    blocks = heldout_blocks(tok, order + ['general'], P['continual']['max_len'])
    lm = score(general, blocks, tok, seeds, a.max_blocks)
    shapes = unit_shapes(general)
    masks = TaskMasks(shapes, meta['params']['smax']).load(load_file(str(last/'hat.safetensors')), order)
    out = {'checkpoint': str(last.relative_to(ROOT)), 'seeds': seeds, 'max_blocks': a.max_blocks, 'smax': masks.smax,
           'units': {k: math.prod(s) for k, s in shapes.items()}, 'domains': {}}
    for t, dom in enumerate(order):                 # each domain's mask against the embedding it started from
        m, e0 = masks.of(dom), start_embedding(shapes, seed * 1000 + t)
        e1 = masks.emb[dom]
        out['domains'][dom] = {
            'off': {k: float((v < 0.5).float().mean()) for k, v in m.items()},
            'off_at_start': {k: float((e0[k] < 0).float().mean()) for k in shapes},
            'flipped': {k: float(((e0[k] > 0) != (e1[k] > 0)).float().mean()) for k in shapes},
            'max_move': {k: float((e1[k] - e0[k]).abs().max()) for k in shapes}}
    out['accumulated_on'] = {k: float((v > 0.5).float().mean()) for k, v in masks.acc.items()}
    weights = load_mlm(last, verbose=False)[0].eval()        # the final weights, no mask
    out['no_mask_minus_lm'] = {c: minus(v, lm[c]) for c, v in score(weights, blocks, tok, seeds, a.max_blocks).items()}
    del weights
    for dom in order:                               # the final weights under each domain's mask, on its domain and on general text
        model = load_with_plugins(last, domain=dom, verbose=False)[0].eval()
        sc = score(model, {c: blocks[c] for c in (dom, 'general')}, tok, seeds, a.max_blocks)
        out['domains'][dom]['masked_minus_lm'] = {c: minus(v, lm[c]) for c, v in sc.items()}
    out['seconds'] = round(time.time() - t0, 1)
    fmt = lambda d: f"{d['mean']:+.4f} +- {d['se']:.4f}"
    pct = lambda d: '/'.join(f"{100 * v:.0f}%" for v in d.values())
    print(f"HAT, final checkpoint {out['checkpoint']}; unit kinds {'/'.join(shapes)}; held-out loss minus the general LM's (nats/token, paired over blocks)")
    nm = out['no_mask_minus_lm']
    print(f"{'no mask':>12}: " + ', '.join(f"{c} {fmt(nm[c])}" for c in order + ['general']))
    for dom in order:
        d = out['domains'][dom]; r = d['masked_minus_lm']
        print(f"{dom:>12}: off {pct(d['off'])} (at start {pct(d['off_at_start'])}, flipped {pct(d['flipped'])}, "
              f"max |e - e0| {max(d['max_move'].values()):.2f}); masked: own {fmt(r[dom])}, general {fmt(r['general'])}")
    print(f"accumulated mask on: {pct(out['accumulated_on'])}; {out['seconds']} s")
    save_json(out, ROOT/a.out)


if __name__ == '__main__': main()
