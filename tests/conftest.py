"""Shared pytest setup: offline, deterministic, two threads."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import torch
torch.set_num_threads(min(2, os.cpu_count() or 1))
