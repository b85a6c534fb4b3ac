"""Two ways to get an NCL step closer to the bf16 limit than autocast alone, measured against it in one run:
`torch.compile` of the encoder (its compile time counted) and a bf16 copy of the weights kept between optimizer steps
(instead of autocast casting every weight at every forward).

Run from the repository root, alone on the machine:  python benchmarks/bench_bf16_paths.py [--steps 5] [--out FILE]

- autocast: the training loop's bf16 path (bench_mfu.AmpStepper: dap_loss under torch.autocast, fp32 weights and AdamW).
- compiled: the same step with the encoder wrapped in torch.compile (inductor, CPU); the first call compiles, and its
  time beyond a plain step is reported as the compile time, with the number of steps it takes to pay it back.
- bf16_weights: the model's weights held in bf16 (the forward casts nothing), the gradients copied into fp32 master
  weights, AdamW on those, the result copied back into the bf16 weights after each step; still under autocast, so
  softmax and the losses run in fp32 as in the loop.
Medians over `--steps` after one unmeasured step (two for `compiled`), variants interleaved step by step; the fp32 step
and the GEMM peaks of the same run are the reference.
"""
from __future__ import annotations
import argparse, contextlib, copy, os, statistics, sys, time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from bench_das import VARIANTS, machine  # noqa: E402
from bench_mfu import SHAPES, AmpStepper, gemm_peak, model_batch  # noqa: E402
from das.core import save_json  # noqa: E402
from das.dap import Encoder, dap_loss  # noqa: E402
from das.evaluate import code_version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class MasterStepper:
    "An NCL step on a bf16 copy of the model, with fp32 master weights and AdamW on them."
    def __init__(self, model, lr=1e-5):
        self.master = model                                   # fp32: the optimizer's weights
        self.model = copy.deepcopy(model).to(torch.bfloat16)  # what the forward and backward use
        self.net = Encoder(self.model)
        self.pairs = [(m, b) for m, b in zip(self.master.parameters(), self.model.parameters())]
        self.opt = torch.optim.AdamW(self.master.parameters(), lr=lr, weight_decay=0.0)

    def __call__(self, batch) -> float:
        t = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = dap_loss(self.net, self.model, batch, None, None, **VARIANTS['ncl'])
        out['loss'].backward()
        for m, b in self.pairs:
            m.grad = None if b.grad is None else b.grad.float(); b.grad = None
        self.opt.step(); self.opt.zero_grad(set_to_none=True)
        with torch.no_grad(): torch._foreach_copy_([b for _, b in self.pairs], [m for m, _ in self.pairs])
        return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--models', default='minilm,smollm2')
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/bf16_paths.json'))
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    res = {'machine': machine(), 'code': code_version(), 'torch': torch.__version__, 'steps': a.steps,
           'gemm_gflops': {nm: gemm_peak(dt) for nm, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16))}, 'models': {}}
    print(f"GEMM peak: fp32 {res['gemm_gflops']['fp32']:.0f}, bf16 {res['gemm_gflops']['bf16']:.0f} GFLOP/s", flush=True)
    for name in a.models.split(','):
        bs, T = SHAPES[name]
        model, batch = model_batch(name, bs, T)
        model.train()
        st = {'fp32': AmpStepper(model, None, dict(VARIANTS['ncl']), None, batch_size=bs, precision='fp32'),
              'autocast': AmpStepper(model, None, dict(VARIANTS['ncl']), None, batch_size=bs, precision='bf16'),
              'compiled': AmpStepper(model, None, dict(VARIANTS['ncl']), None, batch_size=bs, precision='bf16'),
              'bf16_weights': MasterStepper(model)}
        st['compiled'].net = torch.compile(Encoder(model))
        first = {}
        times = {k: [] for k in st}
        for i in range(a.steps + 2):
            for k, s in st.items():
                dt = s(batch)
                if i == 0: first[k] = dt
                elif i >= (2 if k == 'compiled' else 1): times[k].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        compile_s = first['compiled'] - med['compiled']
        gain = med['autocast'] - med['compiled']
        r = {'batch': [bs, T], 'step_seconds': med, 'step_seconds_all': {k: [round(x, 3) for x in v] for k, v in times.items()},
             'first_step_seconds': first, 'compile_seconds': compile_s,
             'speedup_over_fp32': {k: med['fp32'] / v for k, v in med.items()},
             'speedup_over_autocast': {k: med['autocast'] / v for k, v in med.items()},
             'compile_payback_steps': compile_s / gain if gain > 0 else None}
        res['models'][name] = r
        print(f"\n{name} NCL, batch {bs} x {T}:")
        for k, v in med.items():
            print(f"  {k:13s} {v:7.3f} s   x{r['speedup_over_fp32'][k]:.2f} over fp32, x{r['speedup_over_autocast'][k]:.2f} over autocast")
        pb = r['compile_payback_steps']
        print(f"  compile time {compile_s:.1f} s; " + (f"paid back after {pb:.0f} steps" if pb else "never paid back (no gain per step)"), flush=True)
        del model, st
    res['gemm_gflops_end'] = {nm: gemm_peak(dt) for nm, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16))}
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print('\nwritten', a.out)
    return res


if __name__ == '__main__':
    main()
