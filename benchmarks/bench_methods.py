"""Cost per domain of each continual method at the default profile's settings, on the real data and general LM.

Run from the repository root, after `dvc repro warmup general_importance` (it needs models/general and
models/importance_general.pt):

    python benchmarks/bench_methods.py [--methods ncl,adapter,prompt,hat,cpt,elle] [--domains 2] [--steps 80]

Each method runs `run_continual` over the first `--domains` domains of `continual.order`, with `continual` and
`methods.<name>` from params.yaml (80 steps of 16 x 128 per domain by default), in a fresh child process,
so that its peak resident memory (VmHWM) is its own. Printed per method: the wall time of each domain stage
(training, the method's own work before and after it, and the checkpoint), the median over domains, its
ratio to NCL's median measured in the same run, and the peak RSS. The second domain is where the methods that
accumulate (HAT's masks, ELLE's growth and replay, DAS's importance) start paying for it.
"""
from __future__ import annotations
import argparse, dataclasses, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')


def child(method: str, domains: int, steps: int | None, out: str) -> None:
    import torch
    from common import dap_config, study_params
    from das.continual import make_method, method_params_of, run_continual
    p = study_params()
    torch.set_num_threads(int(p['base'].get('num_threads') or 2))
    cfg = dataclasses.asdict(dap_config(p, **({'steps': steps} if steps else {})))
    order = p['continual']['order'][:domains]
    t0 = time.perf_counter()
    man = run_continual(make_method(method, method_params_of(method)), order, ROOT/p['continual']['general_model'], Path(out)/method,
                        cfg, general_importance=ROOT/p['continual']['general_importance'], progress=False)
    peak = next(int(l.split()[1]) / 1024 for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))
    print(json.dumps({'method': method, 'stage_seconds': [c['seconds'] for c in man['checkpoints']], 'labels': [c['label'] for c in man['checkpoints']],
                      'wall_s': time.perf_counter() - t0, 'peak_rss_mib': peak, 'steps': cfg['steps'], 'batch': [cfg['batch_size'], cfg['max_len']]}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', default='ncl,adapter,prompt,hat,cpt,elle', help='comma list of methods (params.yaml names); ncl is added')
    ap.add_argument('--domains', type=int, default=2, help='the first N domains of continual.order')
    ap.add_argument('--steps', type=int, default=None, help='steps per domain (default: continual.steps)')
    ap.add_argument('--out', default=None, help='also write the figures as JSON here')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--tmp', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child: return child(a.child, a.domains, a.steps, a.tmp)
    methods = ['ncl'] + [m for m in a.methods.split(',') if m and m != 'ncl']
    print(f'machine: {os.cpu_count()} cores, load {os.getloadavg()}', flush=True)
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for m in methods:
            cmd = [sys.executable, __file__, '--child', m, '--domains', str(a.domains), '--tmp', d] + (['--steps', str(a.steps)] if a.steps else [])
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if r.returncode: print(f'  {m}: FAILED\n{r.stderr[-3000:]}', flush=True); res[m] = {'failed': r.stderr[-3000:]}; continue
            res[m] = json.loads(r.stdout.strip().splitlines()[-1])
            res[m]['median_stage_s'] = statistics.median(res[m]['stage_seconds'])
            print(f"  {m:8s} per domain {', '.join(f'{l} {s:6.1f} s' for l, s in zip(res[m]['labels'], res[m]['stage_seconds']))}"
                  f"   peak RSS {res[m]['peak_rss_mib']:6.0f} MiB", flush=True)
    base = res.get('ncl', {}).get('median_stage_s')
    print(f'\nper-domain cost, median over {a.domains} domains, ratio to NCL in this run (load at end {os.getloadavg()}):')
    for m, r in res.items():
        if 'failed' in r: continue
        r['ratio_vs_ncl'] = r['median_stage_s'] / base if base else None
        print(f"  {m:8s} {r['median_stage_s'] / 60:6.2f} min   x{r['ratio_vs_ncl']:.2f} NCL   peak RSS {r['peak_rss_mib']:6.0f} MiB")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == '__main__':
    main()
