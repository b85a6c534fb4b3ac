"""What the benchmark scripts share: the study's params.yaml, its continual settings as a DapConfig, run specs
('label=method,key=value,...'), and the held-out MLM scoring (the same blocks and masks for every model).

Import it from a script in this folder as `from common import ...` (the scripts put the repository root and this
folder on sys.path). It is not part of the package and no DVC stage depends on it.
"""
from __future__ import annotations
import argparse, dataclasses, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from das.continual import DapConfig, method_params_of  # noqa: E402
from das.core import DasError  # noqa: E402

SHARED = {f.name for f in dataclasses.fields(DapConfig)}   # the continual settings; any other key belongs to a method


def study_params() -> dict:
    "params.yaml at the repository root."
    return yaml.safe_load((ROOT/'params.yaml').read_text())


PROFILES = ('study', 'llm')   # the masked-LM study (params.yaml as it is) and the decoder profile (its `llm` overlays)


def profile_params(profile: str = 'study', params: dict | None = None) -> dict:
    "params.yaml for a profile: 'llm' overlays llm.continual on `continual` and llm.evaluate on `evaluate` (as its stages do)."
    p = dict(params or study_params())
    if profile not in PROFILES: raise DasError(f"unknown profile {profile!r}", f"use one of: {', '.join(PROFILES)}")
    if profile == 'llm':
        p['continual'] = {**p['continual'], **p['llm']['continual']}
        p['evaluate'] = {**p.get('evaluate', {}), **p['llm'].get('evaluate', {})}
    return p


def dap_config(params: dict | None = None, **over) -> DapConfig:
    "The study's shared settings (params.yaml `continual`, the seed from `base`) with `over` on top."
    p = params or study_params()
    c = {k: v for k, v in p['continual'].items() if k in SHARED}
    return DapConfig.from_dict(c | {'seed': p['base'].get('seed', 0)} | over)


def scalar(text: str):
    "A YAML scalar, with '3e-4' a float too (YAML 1.1 reads exponents without a dot as strings)."
    v = yaml.safe_load(text)
    if isinstance(v, str):
        try: return float(v)
        except ValueError: pass
    return v


def parse_spec(spec: str) -> tuple[str, str, dict, dict]:
    "'label=method,k=v,...' -> (label, method, method overrides, DapConfig overrides); values parsed by `scalar`."
    if '=' not in spec: raise DasError(f"config {spec!r} has no label", "write label=method[,key=value...], e.g. das_s2=das,strength=2")
    label, rest = spec.split('=', 1)
    method, *kvs = rest.split(',')
    meth, cfg = {}, {}
    for kv in kvs:
        if '=' not in kv: raise DasError(f"config {spec!r}: {kv!r} is not key=value", "e.g. lam=0.1 or lr=3e-4")
        k, v = kv.split('=', 1)
        (cfg if k in SHARED else meth)[k] = scalar(v)
    return label, method, meth, cfg


def method_params(method: str, over: dict, params: dict | None = None) -> dict:
    "params.yaml's `methods.<method>` (when it is a name there) with `over` on top."
    p = params or study_params()
    return {**(method_params_of(method) if method in (p.get('methods') or {}) else {}), **over}


def heldout_blocks(tok, corpora, max_len: int) -> dict:
    "Each corpus's held-out text cut into blocks of `max_len` tokens."
    from das.data import load_corpus
    from das.model import chunk_texts
    return {cor: chunk_texts(tok, load_corpus(cor, 'heldout'), max_len) for cor in corpora}


def score(model, blocks: dict, tok, seeds, max_blocks=None) -> dict:
    "Per-block held-out MLM (decoder: next-token) losses of `model` (a model or its folder) on every corpus of `blocks` (das.evaluate.mlm_block_losses)."
    from das.evaluate import mlm_block_losses
    from das.model import load_lm
    if not hasattr(model, 'forward'): model = load_lm(model, verbose=False)[0]   # a masked LM or a decoder
    return {cor: mlm_block_losses(model, bl, tok, seeds=seeds, max_blocks=max_blocks) for cor, bl in blocks.items()}


def minus(a: dict, b: dict) -> dict:
    "{'mean', 'se'}: held-out loss A - B per token, paired on the same blocks and masks (das.evaluate.paired_difference)."
    from das.evaluate import paired_difference
    d = paired_difference(a, b)
    return {'mean': float(d['diff']), 'se': float(d['se'])}


def checkpoint_args(doc: str, method: str, out: str, argv=None) -> tuple:
    "(args, run folder, params.yaml) of a script scoring one method's checkpoints (--run, --max-blocks, --out), torch on the study's threads."
    import torch
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument('--run', default=f'models/runs/{method}')
    ap.add_argument('--max-blocks', type=int, default=128)
    ap.add_argument('--out', default=out)
    a = ap.parse_args(argv)
    run = ROOT/a.run
    if not (run/'run.json').exists():
        raise DasError(f"no {method} run at {run}", f"run `dvc repro train@{method}` first (the checkpoints are not in git)")
    p = study_params()
    torch.set_num_threads(p['base'].get('num_threads') or 2)
    return a, run, p
