"""Helpers of the multi-process tests: a free port for accelerate, and running a command with the repo importable."""
import os, socket, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name('accelerate')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def run(cmd, cwd):
    "Run `cmd` in `cwd` offline, single-threaded, with the repository on PYTHONPATH; fail the test with its output."
    env = {**os.environ, 'PYTHONPATH': f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", 'HF_HUB_OFFLINE': '1',
           'HF_DATASETS_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


def launch(n_processes: int, script: str, *args, cwd, mixed_precision: str = 'no'):
    "accelerate launch of `script` on n CPU processes (gloo; --multi_gpu is what starts several processes without GPUs)."
    multi = ['--multi_gpu', '--num_processes', str(n_processes), '--num_machines', '1'] if n_processes > 1 else ['--cpu', '--num_processes', '1']
    run([ACCELERATE, 'launch', *multi, '--mixed_precision', mixed_precision, '--dynamo_backend', 'no',
         '--main_process_port', str(free_port()), script, *args], cwd)
