"""Steps against this CPU's own limit: the GEMM peak (fp32, bf16) measured in the same run, then NCL and DAS training
steps of MiniLM and SmolLM2 in fp32 and under bf16 autocast, each with its model FLOPs, achieved FLOP/s and share of peak.

Run from the repository root, alone on the machine:  python benchmarks/bench_mfu.py [--steps 5] [--out FILE]

- GEMM peak: median GFLOP/s of `torch.mm` on 2048 x 2048 matrices (fp32; bf16), the process's torch threads.
- Model FLOPs of a step: torch.utils.flop_counter.FlopCounterMode over one full step (forward, backward; matrix products
  and attention, the FLOPs that count for MFU), the same for fp32 and bf16.
- Steps: das.dap.dap_loss + backward + AdamW (bench_das.Stepper: the soft-mask attached for DAS), one fixed batch per
  model (MiniLM 16 x 128 masked movie blocks, the study's; SmolLM2 8 x 128 causal blocks), random importance for DAS
  (the cost does not depend on its values); bf16 = the forward and losses under torch.autocast('cpu', bfloat16), weights
  and optimizer state fp32. Medians over `--steps` after one unmeasured step; variants interleaved step by step.
"""
from __future__ import annotations
import argparse, contextlib, os, statistics, sys, time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from bench_das import VARIANTS, Stepper, machine  # noqa: E402
from das.core import save_json  # noqa: E402
from das.evaluate import code_version  # noqa: E402
from das.dap import block_loader  # noqa: E402
from das.data import base_model_dir, decoder_model_dir, load_corpus  # noqa: E402
from das.family import is_causal, unit_shapes  # noqa: E402
from das.gates import UnitGates, hook_dropout_for  # noqa: E402
from das.model import chunk_texts, load_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def gemm_peak(dtype, n=2048, reps=10) -> float:
    "Median GFLOP/s of an n x n matrix product in `dtype`."
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3): a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


class AmpStepper(Stepper):
    "A Stepper whose forward and losses run under bf16 autocast (precision 'bf16') or not ('fp32')."
    def __init__(self, *a, precision='fp32', **kw):
        super().__init__(*a, **kw); self.precision = precision
    def __call__(self, batch) -> float:
        amp = torch.autocast('cpu', dtype=torch.bfloat16) if self.precision == 'bf16' else contextlib.nullcontext()
        from das.dap import dap_loss
        t = time.perf_counter()
        with amp: out = dap_loss(self.net, self.model, batch, self.gates, self.importance, **self.flags)
        out['loss'].backward()
        self.opt.step(); self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t


def model_batch(name, bs, max_len):
    d = base_model_dir() if name == 'minilm' else decoder_model_dir()
    model, tok = load_lm(d, verbose=False)
    causal = is_causal(model)
    blocks = chunk_texts(tok, load_corpus('movie'), max_len, causal=causal)
    batch = next(iter(block_loader(blocks, tok.mask_token_id, model.config.vocab_size, bs, bs, 0, causal=causal)))
    return model, batch


SHAPES = {'minilm': (16, 128), 'smollm2': (8, 128)}   # each model's batch: rows x tokens


def steppers_for(name: str):
    "Model, fixed batch, gates and the steppers {(variant, precision)} of NCL and DAS in fp32 and bf16 (random importance)."
    bs, T = SHAPES[name]
    model, batch = model_batch(name, bs, T)
    model.train(); gates = UnitGates(model)
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(0)) for k, s in unit_shapes(model).items()}
    extra = {'hook_dropout': hook_dropout_for(model)} if hook_dropout_for(model) else {}   # as train_domain: a family without dropout
    steppers = {(v, p): AmpStepper(model, imp, {**VARIANTS[v], **(extra if v != 'ncl' else {})}, gates, batch_size=bs, precision=p)
                for v in ('ncl', 'das') for p in ('fp32', 'bf16')}
    return model, batch, gates, steppers


def flops_of(stepper, batch) -> int:
    with FlopCounterMode(display=False) as fc: stepper(batch)
    return fc.get_total_flops()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--models', default='minilm,smollm2')
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/mfu.json'))
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    res = {'machine': machine(), 'code': code_version(), 'steps': a.steps, 'gemm_gflops': {}, 'models': {}}
    for nm, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16)): res['gemm_gflops'][nm] = gemm_peak(dt)
    print(f"GEMM peak (2048^2, {torch.get_num_threads()} threads): fp32 {res['gemm_gflops']['fp32']:.0f} GFLOP/s, "
          f"bf16 {res['gemm_gflops']['bf16']:.0f} GFLOP/s (x{res['gemm_gflops']['bf16'] / res['gemm_gflops']['fp32']:.2f})", flush=True)
    for name in a.models.split(','):
        bs, T = SHAPES[name]
        model, batch, gates, steppers = steppers_for(name)
        fl = {v: flops_of(steppers[(v, 'fp32')], batch) for v in ('ncl', 'das')}
        times = {k: [] for k in steppers}
        for i in range(a.steps + 1):
            for k, s in steppers.items():
                dt = s(batch)
                if i: times[k].append(dt)
        gates.remove()
        r = {'batch': [bs, T], 'params_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 1), 'gflop_per_step': {v: f / 1e9 for v, f in fl.items()},
             'step_seconds': {f'{v}_{p}': statistics.median(t) for (v, p), t in times.items()},
             'step_seconds_all': {f'{v}_{p}': [round(x, 3) for x in t] for (v, p), t in times.items()}}
        r['gflops_achieved'] = {k: fl[k.split('_')[0]] / 1e9 / s for k, s in r['step_seconds'].items()}
        r['share_of_peak'] = {k: g / res['gemm_gflops'][k.split('_')[1]] for k, g in r['gflops_achieved'].items()}
        r['bf16_speedup'] = {v: r['step_seconds'][f'{v}_fp32'] / r['step_seconds'][f'{v}_bf16'] for v in ('ncl', 'das')}
        r['das_over_ncl'] = {p: r['step_seconds'][f'das_{p}'] / r['step_seconds'][f'ncl_{p}'] for p in ('fp32', 'bf16')}
        res['models'][name] = r
        print(f"\n{name} ({r['params_m']} M parameters, batch {bs} x {T}): NCL {r['gflop_per_step']['ncl']:.0f} GFLOP, DAS {r['gflop_per_step']['das']:.0f} GFLOP per step")
        for k, s in r['step_seconds'].items():
            print(f"  {k:10s} {s:7.3f} s  {r['gflops_achieved'][k]:6.1f} GFLOP/s  {100 * r['share_of_peak'][k]:5.1f}% of the {k.split('_')[1]} GEMM peak")
        print(f"  bf16 speed-up: NCL x{r['bf16_speedup']['ncl']:.2f}, DAS x{r['bf16_speedup']['das']:.2f}; "
              f"DAS / NCL: fp32 x{r['das_over_ncl']['fp32']:.2f}, bf16 x{r['das_over_ncl']['bf16']:.2f}", flush=True)
        del model, steppers
    res['gemm_gflops_end'] = {nm: gemm_peak(dt) for nm, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16))}
    print(f"GEMM peak again at the end: fp32 {res['gemm_gflops_end']['fp32']:.0f}, bf16 {res['gemm_gflops_end']['bf16']:.0f} GFLOP/s "
          f"(the shares above use the start's; a large change means the machine was not quiet)")
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print('\nwritten', a.out)
    return res


if __name__ == '__main__':
    main()
