"""Benchmark one MLM training step (forward + backward + AdamW): vocabulary logits only at masked positions
(das.model.mlm_loss) vs the stock BertForMaskedLM full-vocabulary path (model(**batch).loss).

Usage: .venv/bin/python benchmarks/bench_mlm.py [--batch-size 16] [--seq-len 128] [--steps 12] [--warmup 2]
The two variants run interleaved (A B A B ...) on two identical copies of the base model, so that a change in
machine load hits both alike. Reports medians, their ratio and tokens/s.
"""
import argparse, copy, os, platform, statistics, time
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch
from das.data import base_model_dir, load_corpus
from das.model import chunk_texts, load_mlm, mlm_collator, mlm_loss

def cpu_model() -> str:
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch-size', type=int, default=16); ap.add_argument('--seq-len', type=int, default=128)
    ap.add_argument('--steps', type=int, default=12, help='timed steps per variant (>= 10)')
    ap.add_argument('--warmup', type=int, default=2, help='untimed steps per variant first')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    ap.add_argument('--model', default=None, help='model folder (default: data/base_model)')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, tok = load_mlm(a.model or base_model_dir(), verbose=False)
    ds = chunk_texts(tok, load_corpus('general', 'heldout'), a.seq_len)
    batch = mlm_collator(tok, seed=0)([ds[i] for i in range(a.batch_size)])
    models = {'masked-only': model.train(), 'stock full-vocab': copy.deepcopy(model).train()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
    def step(k):
        m, opt = models[k], opts[k]
        t = time.perf_counter()
        loss = mlm_loss(m, batch)[0] if k == 'masked-only' else m(**batch).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t
    times = {k: [] for k in models}
    for i in range(a.warmup + a.steps):
        for k in models:
            dt = step(k)
            if i >= a.warmup: times[k].append(dt)
    n_tok, n_masked = a.batch_size * a.seq_len, int((batch['labels'] != -100).sum())
    print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, torch {torch.__version__} threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"batch {a.batch_size} x {a.seq_len} = {n_tok} tokens, {n_masked} masked; {a.steps} timed steps per variant "
          f"after {a.warmup} warm-up steps, interleaved")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>17}: median {med[k]*1000:8.0f} ms/step  (min {min(v)*1000:.0f}, max {max(v)*1000:.0f})  "
              f"{n_tok/med[k]:8.0f} tokens/s")
    print(f"speed-up of masked-only logits: {med['stock full-vocab']/med['masked-only']:.2f}x")

if __name__ == '__main__': main()
