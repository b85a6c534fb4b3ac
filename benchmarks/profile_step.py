"""Where a training step's time goes: torch.profiler over NCL and DAS steps of MiniLM and SmolLM2, in fp32 and under
bf16 autocast, the top operators by self CPU time and the share of the step spent in matrix products.

Run from the repository root, alone on the machine:
    python benchmarks/profile_step.py [--models minilm,smollm2] [--steps 2] [--top 12] [--out FILE]

The steps are bench_mfu's (das.dap.dap_loss + backward + AdamW, the soft-mask attached for DAS; MiniLM 16 x 128 masked
movie blocks, SmolLM2 8 x 128 causal blocks; random importance). Two unmeasured steps, then `--steps` profiled ones.
"Matrix products" are the operators whose self time is a GEMM (MATMUL_OPS: mm, addmm, bmm, baddbmm and the fused
attention kernels); everything else (element-wise, softmax, norms, casts, the optimizer, copies, hooks) is the rest.
"""
from __future__ import annotations
import argparse, os, sys, time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from bench_das import machine  # noqa: E402
from bench_mfu import SHAPES, steppers_for  # noqa: E402
from das.core import save_json  # noqa: E402
from das.evaluate import code_version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATMUL_OPS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm', 'aten::_scaled_dot_product_flash_attention_for_cpu',
              'aten::_scaled_dot_product_flash_attention_for_cpu_backward', 'mkldnn::_linear_pointwise')


def profile_steps(stepper, batch, steps: int) -> dict:
    "Self CPU time per operator (ms per step), the step time, and the matrix products' share."
    for _ in range(2): stepper(batch)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps): stepper(batch)
    wall = (time.perf_counter() - t0) / steps
    self_ms = defaultdict(float); calls = defaultdict(int)
    for e in prof.key_averages():
        self_ms[e.key] += e.self_cpu_time_total / 1e3 / steps; calls[e.key] += e.count // steps
    total = sum(self_ms.values())
    mm = sum(v for k, v in self_ms.items() if k in MATMUL_OPS)
    return {'step_seconds_profiled': wall, 'self_ms_total': total, 'matmul_ms': mm, 'matmul_share': mm / total,
            'ops': {k: {'self_ms': round(v, 2), 'calls': calls[k]} for k, v in sorted(self_ms.items(), key=lambda kv: -kv[1])}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', default='minilm,smollm2')
    ap.add_argument('--steps', type=int, default=2)
    ap.add_argument('--top', type=int, default=12)
    ap.add_argument('--out', default=str(ROOT/'benchmarks/results/profile_step.json'))
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    res = {'machine': machine(), 'code': code_version(), 'steps': a.steps, 'models': {}}
    for name in a.models.split(','):
        model, batch, gates, steppers = steppers_for(name)
        res['models'][name] = {'batch': list(SHAPES[name])}
        for (v, p), s in steppers.items():
            r = profile_steps(s, batch, a.steps)
            ops = [[k, o['self_ms'], o['calls']] for k, o in r['ops'].items()][:60]   # a list: the JSON keeps the order
            res['models'][name][f'{v}_{p}'] = {**{k: x for k, x in r.items() if k != 'ops'}, 'ops_by_self_time': ops}
            print(f"\n{name} {v} {p}: {r['step_seconds_profiled']:.3f} s per profiled step; matrix products "
                  f"{r['matmul_ms']:.0f} of {r['self_ms_total']:.0f} ms self time ({100 * r['matmul_share']:.0f}%)")
            for k, ms, calls in ops[:a.top]:
                print(f"  {k:60s} {ms:9.1f} ms  {calls:6d} calls  {100 * ms / r['self_ms_total']:5.1f}%")
        gates.remove(); del model, steppers
    res['machine']['loadavg_end'] = os.getloadavg()
    save_json(res, a.out)
    print('\nwritten', a.out)
    return res


if __name__ == '__main__':
    main()
