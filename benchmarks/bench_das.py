"""Cost of a DAS training step against a plain MLM (NCL) step, importance throughput, and peak memory.

Run from the repository root:  python benchmarks/bench_das.py [--steps 10] [--out bench.json]

Everything comes from ONE run on this machine: the base model (data/base_model), one fixed batch of
16 x 128 tokens of the movie corpus, single process. Step times are medians over `--steps` measured steps
after `--warmup` unmeasured ones. The variants are interleaved step by step (NCL, DAS, ...), so that a
change in the machine's load during the run hits all of them alike; the load average is printed.
Peak memory is the resident set size high-water mark (VmHWM of /proc/self/status, reset with clear_refs just
before the steps) of a fresh child process that loads the model and data and runs 3 steps of one variant.
(`ru_maxrss` is no good here: a child started by fork/exec inherits the parent's high-water mark.)
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from das.contrast import pool  # noqa: E402
from das.dap import Encoder, block_loader, contrast_agreement, dap_loss  # noqa: E402
from das.data import base_model_dir, load_corpus  # noqa: E402
from das.gates import UnitGates  # noqa: E402
from das.importance import compute_importance  # noqa: E402
from das.model import chunk_texts, load_mlm  # noqa: E402
from das.softmask import SoftMask  # noqa: E402

VARIANTS = {  # name: dap_loss flags (+ `softmask`: the soft-mask form, 'update' unless given; NCL has none)
    'ncl': dict(contrast=False),
    'das': dict(),                                               # ours: positive and negative without gradient, update mask
    'das_gradmask': dict(softmask='grad'),                       # the same step with the paper's gradient mask
    'das_half_rows': dict(contrast_rows='half'),                 # contrast on the first half of the batch's rows
    'das_masked_views': dict(views='masked'),                    # contrast on the masked input; the MLM pass is the anchor
    'das_paper_views': dict(positive_grad=True),                 # anchor and positive with gradient
    'das_reference': dict(positive_grad=True, negative_grad=True),  # all four views with gradient
}


def machine() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    return {'nproc': os.cpu_count(), 'affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
            'torch_threads': torch.get_num_threads(), 'cpu_model': cpu, 'torch': torch.__version__,
            'python': platform.python_version(), 'loadavg_start': os.getloadavg()}


def setup(batch_size: int, max_len: int, seed: int = 0):
    "Base model, general importance (KL proxy on 2 batches), one fixed batch, and a few batches for importance."
    model, tok = load_mlm(base_model_dir(), verbose=False)
    blocks = chunk_texts(tok, load_corpus('movie'), max_len=max_len)
    batches = list(block_loader(blocks, tok.mask_token_id, model.config.vocab_size, n_rows=5 * batch_size,
                                batch_size=batch_size, seed=seed))
    return model, tok, batches


class Stepper:
    "One full training step of a variant: dap_loss, backward, AdamW step with the soft mask attached (update or grad form)."
    def __init__(self, model, importance, flags, gates, lr=1e-5, batch_size=16):
        flags = {k: batch_size // 2 if v == 'half' else v for k, v in flags.items()}
        form = flags.pop('softmask', 'update')
        self.model, self.flags, self.importance = model, flags, importance
        self.net, self.gates = Encoder(model), gates
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        self.sm = SoftMask(model, importance, form).attach(self.opt) if flags.get('contrast', True) else None   # hooks on this optimizer only

    def __call__(self, batch) -> float:
        t = time.perf_counter()
        out = dap_loss(self.net, self.model, batch, self.gates, self.importance, **self.flags)
        out['loss'].backward()
        self.opt.step(); self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t


def time_steps(model, importance, batch, variants, steps, warmup):
    model.train()
    gates = UnitGates(model)
    steppers = {v: Stepper(model, importance, VARIANTS[v], gates, batch_size=batch['input_ids'].shape[0]) for v in variants}
    times = {v: [] for v in variants}
    for i in range(warmup + steps):
        for v in variants:
            dt = steppers[v](batch)
            if i >= warmup: times[v].append(dt)
    gates.remove()
    return times


def importance_throughput(model, batches, loss, **kw):
    st = {}
    compute_importance(model, batches, loss=loss, stats=st, **kw)
    return st['n_tokens'] / st['seconds'], st


def peak_rss_child(variant: str, batch_size: int, max_len: int, steps: int = 3) -> dict:
    "Run `steps` steps of one variant in a fresh process; its RSS high-water marks before and after."
    r = subprocess.run([sys.executable, __file__, '--child', variant, '--batch-size', str(batch_size),
                        '--max-len', str(max_len), '--steps', str(steps)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _status(key):
    "A field of /proc/self/status in MiB (VmRSS: resident now; VmHWM: resident high-water mark)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    return float('nan')


def child(variant, batch_size, max_len, steps):
    "Measure the resident-memory peak of `steps` training steps, after setup, in this fresh process."
    model, tok, batches = setup(batch_size, max_len)
    imp = {k: torch.rand(s, generator=torch.Generator().manual_seed(0)) for k, s in UnitGates(model).shapes.items()}
    step = Stepper(model, imp, VARIANTS[variant], UnitGates(model)); model.train()
    rest = _status('VmRSS')
    try:   # reset the high-water mark to the current RSS, so the peak is that of the steps (Linux >= 4.0)
        Path('/proc/self/clear_refs').write_text('5'); how = 'VmHWM after clear_refs'
    except OSError: how = 'ru_maxrss (includes setup)'
    for _ in range(steps): step(batches[0])
    peak = _status('VmHWM') if how.startswith('VmHWM') else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'variant': variant, 'rss_before_steps_mib': rest, 'peak_rss_mib': peak, 'how': how}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=10, help='measured steps per variant (>= 10)')
    ap.add_argument('--warmup', type=int, default=2, help='unmeasured steps per variant first')
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--max-len', type=int, default=128)
    ap.add_argument('--variants', default='ncl,das,das_gradmask,das_half_rows,das_masked_views,das_paper_views', help=f'comma list from {list(VARIANTS)}')
    ap.add_argument('--no-agreement', action='store_true', help='skip the gradient agreement of the contrast forms')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s default)')
    ap.add_argument('--skip-importance', action='store_true', help='skip the importance throughput')
    ap.add_argument('--skip-memory', action='store_true', help='skip the peak memory')
    ap.add_argument('--out', default=None, help='also write the figures as JSON here')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    if a.child: return child(a.child, a.batch_size, a.max_len, a.steps)
    variants = a.variants.split(',')
    res = {'machine': machine(), 'batch': [a.batch_size, a.max_len], 'steps': a.steps, 'warmup': a.warmup}
    print('machine:', json.dumps(res['machine']))
    model, tok, batches = setup(a.batch_size, a.max_len)
    t0 = time.perf_counter()
    general = compute_importance(model, batches[1:3], loss='kl')          # the negatives' gates and the soft mask
    print(f'general importance (KL proxy, 2 batches): {time.perf_counter() - t0:.1f} s')

    times = time_steps(model, general, batches[0], variants, a.steps, a.warmup)
    med = {v: statistics.median(t) for v, t in times.items()}
    tokens = a.batch_size * a.max_len
    res['step_seconds_median'] = med
    res['step_seconds_all'] = times
    res['ratio_vs_ncl'] = {v: med[v] / med['ncl'] for v in variants}
    res['ratio_vs_ncl_paired_median'] = {v: statistics.median(x / y for x, y in zip(times[v], times['ncl'])) for v in variants}
    print(f'\nstep time, batch {a.batch_size} x {a.max_len}, median of {a.steps} after {a.warmup} warm-up (interleaved):')
    for v in variants:
        print(f'  {v:18s} {med[v]:7.3f} s   x{res["ratio_vs_ncl"][v]:.2f} NCL (paired median x{res["ratio_vs_ncl_paired_median"][v]:.2f})'
              f'   {tokens / med[v]:8.0f} tokens/s')
    mlm_tps = tokens / med['ncl']
    res['mlm_train_tokens_per_s'] = mlm_tps
    if {'das', 'das_gradmask'} <= set(variants):
        r = statistics.median(x / y for x, y in zip(times['das'], times['das_gradmask']))
        res['update_vs_grad_mask'] = {'step_ratio_median': med['das'] / med['das_gradmask'], 'step_ratio_paired_median': r}
        print(f'  update mask vs gradient mask (das / das_gradmask): x{med["das"] / med["das_gradmask"]:.3f} (paired median x{r:.3f})')

    res['importance'] = {}
    if not a.skip_importance: print('\nimportance pass throughput (das.importance.compute_importance, 2 batches):')
    for name, loss, kw in () if a.skip_importance else (('kl', 'kl', {}), ('kl_two_views', 'kl', {'grad_views': 2}), ('mlm', 'mlm', {})):
        tps, st = importance_throughput(model, batches[3:5], loss, **kw)
        res['importance'][name] = {'tokens_per_s': tps, 'ratio_vs_mlm_training': tps / mlm_tps, 'seconds': st['seconds'],
                                   'n_tokens': st['n_tokens']}
        print(f'  {name:12s} {tps:8.0f} tokens/s   x{tps / mlm_tps:.2f} MLM training throughput ({mlm_tps:.0f} tokens/s)')

    if not a.no_agreement:
        half = {k: v[: a.batch_size // 2] for k, v in batches[0].items()}
        t0 = time.perf_counter()
        res['agreement'] = contrast_agreement(model, half, general)
        print(f'\ncontrast forms, gradient agreement ({a.batch_size // 2} x {a.max_len}, 3 dropout seeds, {time.perf_counter() - t0:.0f} s):')
        for f, r in res['agreement'].items():
            print(f'  {f:20s} loss {r["loss"]:.5f}  grad norm {r["grad_norm"]:.4g}  grad cosine with paper (other draws) {r["grad_cos_vs_paper"]:.3f}')

    if not a.skip_memory: print('\npeak memory: resident set size (RSS) high-water mark of a fresh process during 3 steps (model, data, optimizer loaded):')
    res['peak_rss'] = {}
    for v in () if a.skip_memory else [v for v in ('ncl', 'das', 'das_gradmask') if v in variants]:
        m = peak_rss_child(v, a.batch_size, a.max_len)
        res['peak_rss'][v] = m
        print(f'  {v:4s} peak {m["peak_rss_mib"]:6.0f} MiB, at rest before the steps {m["rss_before_steps_mib"]:6.0f} MiB, '
              f'step adds {m["peak_rss_mib"] - m["rss_before_steps_mib"]:5.0f} MiB   [{m["how"]}]')
    if {'das', 'das_gradmask'} <= set(res['peak_rss']):
        pr = res['peak_rss']['das']['peak_rss_mib'] / res['peak_rss']['das_gradmask']['peak_rss_mib']
        res.setdefault('update_vs_grad_mask', {})['peak_rss_ratio'] = pr
        print(f'  update mask vs gradient mask: peak RSS x{pr:.3f}')
    res['machine']['loadavg_end'] = os.getloadavg()
    print('\nload average at start / end:', res['machine']['loadavg_start'], res['machine']['loadavg_end'])
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2, sort_keys=True))
    return res


if __name__ == '__main__':
    main()
