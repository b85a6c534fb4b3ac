"""Does the general importance depend on which text it is computed from? (The paper: cosine 0.89-0.92 between domains.)

The proxy-KL importance (dropout on, as the `general_importance` stage computes it) of the general LM
(models/general), computed from each domain's training text and from the general corpus, with the
`general_importance` settings of params.yaml (blocks, positions, seed). The cosine similarity of every pair of
importance vectors (heads, intermediate and output units of all layers, flattened) is written to
benchmarks/results/importance_similarity.json; the report shows it as a heatmap.

    python benchmarks/importance_similarity.py [--corpora general movie computing ...]
"""
from __future__ import annotations
import argparse, os, sys, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from das.continual import domain_blocks  # noqa: E402
from das.core import save_json  # noqa: E402
from das.dap import block_loader  # noqa: E402
from das.importance import compute_importance  # noqa: E402
from das.model import load_mlm  # noqa: E402
from das.report import cosine_matrix  # noqa: E402


def main(argv=None):
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    gi, order = params['general_importance'], params['continual']['order']
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--corpora', nargs='+', default=['general'] + order)
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/importance_similarity.json'))
    a = ap.parse_args(argv)
    general = ROOT/gi['model_dir']
    if not general.exists(): raise SystemExit(f'{general} is missing: run `dvc repro warmup` first')
    model, tok = load_mlm(general, verbose=False)
    seed, n = params['base']['seed'], gi['batch_size'] * gi['importance_batches']
    imps, secs = {}, {}
    for c in a.corpora:
        t0 = time.perf_counter()
        blocks = domain_blocks(tok, c, n, gi['max_len'], seed)
        dl = block_loader(blocks, tok.mask_token_id, model.config.vocab_size, n, gi['batch_size'], seed)
        imps[c] = compute_importance(model, dl, loss='kl', n_positions=gi['n_positions'], grad_views=gi['grad_views'], seed=seed)
        secs[c] = time.perf_counter() - t0
        print(f'{c}: {secs[c]:.0f} s', flush=True)
    names, C = cosine_matrix(imps)
    off = [float(C[i, j]) for i in range(len(names)) for j in range(len(names)) if i != j]
    res = {'corpora': names, 'cosine': C.round(4).tolist(), 'min': min(off), 'mean': sum(off) / len(off), 'max': max(off),
           'settings': {k: gi[k] for k in ('batch_size', 'max_len', 'importance_batches', 'grad_views', 'n_positions')} | {'seed': seed},
           'seconds': secs, 'cpu': os.cpu_count()}
    save_json(res, a.out)
    print(f"cosine between the corpora's importance: min {res['min']:.3f}, mean {res['mean']:.3f}, max {res['max']:.3f} (written {a.out})")
    return res


if __name__ == '__main__':
    main()
