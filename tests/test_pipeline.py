"""The DVC pipeline as a DVC user expects it, on the smoke profile (tiny model, two domains, two steps).

One temporary repository holds this repo's dvc.yaml, notebooks, package and a params.yaml that is the real one
with smoke values overlaid (so a renamed or missing parameter fails here), and one domain brought by the user
(a folder of text and a labelled CSV, listed in params.yaml, no code). Checked: `dvc repro` runs every stage
through papermill; `dvc status` is clean after it; a second `dvc repro` runs nothing; changing one method's
parameter reruns only that method's stages and the report; `dvc exp run -S` runs an experiment;
`dvc metrics show`, `dvc params diff` and `dvc plots show` (PNG, no CDN) work.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = {
    'base': {'num_threads': 1},
    'warmup': {'steps': 2, 'batch_size': 4, 'max_len': 32, 'max_train_docs': 40, 'eval_max_blocks': 4,
               'eval_max_blocks_general': 4, 'eval_batch_size': 8, 'log_every': 1},
    'general_importance': {'batch_size': 4, 'max_len': 32, 'importance_batches': 1},
    'llm': {'warmup': {'model_path': '', 'batch_size': 4, 'max_len': 32, 'eval_every': 2, 'max_steps': 4, 'dev_docs': 8,
                       'dev_blocks': 4, 'heldout_blocks': 4, 'max_train_docs': 40},   # '': a tiny Llama with SmolLM2's tokenizer
            'general_importance': {'batch_size': 4, 'max_len': 32, 'importance_batches': 1},
            'methods': ['base', 'das_replay'], 'seeded': ['das_replay'], 'seeds': [1],   # a composite, and a second seed
            'continual': {'order': ['movie', 'toy'], 'steps': 2, 'batch_size': 4, 'max_len': 32, 'importance_batches': 1},
            'evaluate': {'max_train': 32, 'max_test': 32, 'mlm_max_blocks': 4},
            'report': {'methods': ['base', 'das_replay']}},
    'custom_domains': {'toy': {'corpus': 'custom_inputs/toy/texts', 'task': 'custom_inputs/toy/labels.csv'}},
    'continual': {'order': ['movie', 'toy'], 'steps': 2, 'batch_size': 4, 'max_len': 32, 'importance_batches': 1},
    'study': {'methods': ['base', 'ncl', 'das']},
    'evaluate': {'seeds': [0], 'max_train': 32, 'max_test': 32, 'max_len': 32, 'mlm_max_blocks': 4},
    'quick': {'methods': ['base', 'das'], 'continual': {'order': ['movie', 'toy'], 'steps': 2}, 'evaluate': {'mlm_max_blocks': 4},
              'report': {'methods': ['base', 'das']}},
    'docs': {'execute': False},
}
QUICK = {'report_quick'} | {f'{s}_quick@{m}' for s in ('train', 'evaluate') for m in ('base', 'das')}
LLM = {'warmup_llm', 'general_importance_llm'}   # the decoder's general LM and its importance (tiny Llama with SmolLM2's tokenizer here)
LLM_STUDY = ({'report_llm', 'train_llm_seed@das_replay-1', 'evaluate_llm_seed@das_replay-1'}   # the decoder profile on the tiny Llama
             | {f'{s}_llm@{m}' for s in ('train', 'evaluate', 'importance') for m in ('base', 'das_replay')})


def overlay(d: dict, o: dict) -> dict:
    for k, v in o.items():
        if k not in d: raise KeyError(f'params.yaml has no {k!r}: the smoke overlay is out of date')
        d[k] = overlay(d[k], v) if isinstance(v, dict) and d[k] else v
    return d


def sh(repo, *cmd, check=True):
    env = {**os.environ, 'PYTHONPATH': str(repo), 'PATH': f'{BIN}:{os.environ["PATH"]}', 'HF_HUB_OFFLINE': '1',
           'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'DVC_NO_ANALYTICS': '1'}
    r = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True)
    if check and r.returncode: raise AssertionError(f'{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return r.stdout + r.stderr


PIPELINE_FILES = ('dvc.yaml', 'settings.ini', 'benchmarks/results/protocol.json',   # the report stage reads the diagnoses
                  'benchmarks/results/das_settings.json', 'benchmarks/results/importance_similarity.json',
                  'benchmarks/results/tradeoff.json', 'benchmarks/results/tradeoff_llm.json', 'results/code_equivalence.json',   # the report quotes the code equivalence
                  'results/update_ratio.json', 'benchmarks/results/softmask_evidence_llm.json')   # the README's figure and findings


def new_repo(r: Path, dirs=('nbs', 'das'), files=PIPELINE_FILES) -> Path:
    "A temporary copy of this repo's pipeline: `files` and `dirs` copied, data/ linked."
    r.mkdir(parents=True)
    for f in files: (r/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT/f, r/f)
    for d in dirs: shutil.copytree(ROOT/d, r/d, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    (r/'data').symlink_to(ROOT/'data', target_is_directory=True)
    return r


def commit_repo(r: Path, ignore: str) -> Path:
    "git and DVC initialized (analytics off), everything committed."
    (r/'.gitignore').write_text(ignore + '__pycache__/\n')
    sh(r, 'git', 'init', '-q'); sh(r, 'git', 'config', 'user.email', 't@t'); sh(r, 'git', 'config', 'user.name', 't')
    sh(r, 'dvc', 'init', '-q'); sh(r, 'dvc', 'config', 'core.analytics', 'false')
    shutil.copy(ROOT/'.dvcignore', r/'.dvcignore')      # __pycache__ in das/ must not count as a change of the docs stage's deps
    sh(r, 'git', 'add', '-A'); sh(r, 'git', 'commit', '-qm', 'pipeline')
    return r


def ran(out: str) -> set:
    "Stages that `dvc repro` / `dvc exp run` executed."
    return {l.split("'")[1] for l in out.splitlines() if l.startswith("Running stage '")}


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    if not (ROOT/'data'/'base_model'/'config.json').exists(): pytest.fail('data/ is missing: run `make data` first')
    r = new_repo(tmp_path_factory.mktemp('pipe')/'repo')
    words = 'the market price of grain rose while farmers stored their harvest and traders waited for rain'.split()
    (r/'custom_inputs'/'toy'/'texts').mkdir(parents=True)
    (r/'custom_inputs'/'toy'/'texts'/'a.txt').write_text(
        ''.join(' '.join(words[(i * 7 + j) % len(words)] for j in range(140)) + f' line {i}\n' for i in range(40)))
    (r/'custom_inputs'/'toy'/'labels.csv').write_text('text,label\n' + ''.join(
        f'{"rain fell on the field" if y else "prices went up at the market"} number {i},{"weather" if y else "trade"}\n'
        for i in range(10) for y in (0, 1)))
    sys.path.insert(0, str(ROOT))
    from das.continual import smoke_model_dir
    smoke_model_dir(r/'smoke_model')
    params = overlay(yaml.safe_load((ROOT/'params.yaml').read_text()), {**SMOKE, 'base': {**SMOKE['base'], 'model_path': 'smoke_model'}})
    (r/'params.yaml').write_text(yaml.safe_dump(params, sort_keys=False))
    return commit_repo(r, 'smoke_model/\n')


@pytest.fixture(scope='module')
def studied(repo):
    "The toy study run once (`dvc repro`) and committed; returns what `dvc repro` printed. Any test can start from it."
    out = sh(repo, 'dvc', 'repro')
    sh(repo, 'git', 'add', '-A'); sh(repo, 'git', 'commit', '-qm', 'study')
    return out


@pytest.mark.xdist_group('studied')   # the toy study's tests: one xdist work unit (make test's --dist loadgroup)
def test_repro_status_noop_and_selective_rerun(repo, studied):
    out = studied
    stages = {'warmup', 'custom_domains', 'general_importance', 'report', 'docs'} | {f'{s}@{m}' for s in ('train', 'evaluate', 'importance') for m in ('base', 'ncl', 'das')}
    assert ran(out) == stages | QUICK | LLM | LLM_STUDY, out[-2000:]
    llm = json.loads((repo/'llm'/'results'/'eval'/'das_replay.json').read_text())
    assert llm['domain_tasks'] == ['movie', 'toy'] and len(llm['rows']) == 2                 # the decoder's composite, evaluated
    assert 'das_replay' in (repo/'llm'/'table.md').read_text()
    assert (repo/'llm'/'results'/'seeds'/'seed1'/'eval'/'das_replay.json').exists()
    for p in ('models/general', 'models/importance_general.pt', 'results/eval/das.json',
              'results/table.md', 'runs/report.ipynb', 'plots/warmup.png', 'plots/report/accuracy_matrices.png',
              'data_custom/toy/task_test.jsonl', 'models/runs/das/1-toy', '_site/index.html', '_site/runs/report.html',
              'results/importance/das/run.json', 'results/importance/das/1-toy/importance_accumulated.pt', 'plots/report/importance_growth.png',
              'quick/results/eval/das.json', 'quick/table.md', 'quick/report.html', 'quick/plots/stability_plasticity.png'):
        assert (repo/p).exists(), p
    res = json.loads((repo/'results'/'eval'/'das.json').read_text())
    assert res['domain_tasks'] == ['movie', 'toy'] and 'toy' in res['corpora']      # the user's domain is trained and evaluated
    assert res['A_dev'] and 'dev' in json.loads((repo/'metrics'/'eval'/'das.json').read_text())   # dev scores, to choose settings on
    assert len(res['rows'][-1]['mlm_blocks']['general']['n']) == 4                  # per-block held-out losses: knowledge metrics
    study = json.loads((repo/'quick'/'metrics'/'study.json').read_text())
    assert {'adaptation', 'general_forgetting', 'domain_forgetting'} <= set(study['knowledge']['das'])
    assert 'adaptation (nats)' in (repo/'quick'/'table.md').read_text()
    assert 'up to date' in sh(repo, 'dvc', 'status', 'report_quick')
    assert 'up to date' in sh(repo, 'dvc', 'status')
    again = sh(repo, 'dvc', 'repro')
    assert ran(again) == set(), again[-2000:]                                 # a second repro does nothing

    p = yaml.safe_load((repo/'params.yaml').read_text())
    p['methods']['das']['lam'] = 0.5                                          # one method's parameter
    (repo/'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    diff = sh(repo, 'dvc', 'params', 'diff')
    assert 'methods.das.lam' in diff and '0.5' in diff
    out = sh(repo, 'dvc', 'repro')
    assert ran(out) == {'train@das', 'evaluate@das', 'importance@das', 'report', 'docs', 'train_quick@das', 'evaluate_quick@das', 'report_quick'}, out[-2000:]
    assert 'metrics/study.json' in sh(repo, 'dvc', 'metrics', 'show')
    sh(repo, 'dvc', 'plots', 'show', '-o', 'dvc_plots')
    html = (repo/'dvc_plots'/'index.html').read_text()
    assert '<img' in html and 'cdn' not in html.lower()                        # PNG only, nothing to fetch
    sh(repo, 'git', 'add', '-A'); sh(repo, 'git', 'commit', '-qm', 'lam')


@pytest.mark.xdist_group('studied')   # the toy study's tests: one xdist work unit (make test's --dist loadgroup)
def test_exp_run_set_param(repo, studied):
    "`dvc exp run -S` sets one parameter and reruns exactly the stages that read it (here the quick profile's report only)."
    out = sh(repo, 'dvc', 'exp', 'run', '-S', 'quick.report.budget_h=1.0', '-n', 'quick_budget')
    assert ran(out) == {'report_quick'}, out[-2000:]
    assert 'quick_budget' in sh(repo, 'dvc', 'exp', 'list')
    assert 'quick.report.budget_h' in sh(repo, 'dvc', 'params', 'diff', 'HEAD', 'quick_budget')   # the experiment holds the new value


@pytest.mark.slow   # eleven evaluate stages and three reports (about 4 min): `make test-slow`
@pytest.mark.xdist_group('studied')
def test_exp_run_set_shared_param(repo, studied):
    "A parameter every profile's evaluation reads (`evaluate`, overlaid by quick.evaluate and llm.evaluate) reruns all of them."
    out = sh(repo, 'dvc', 'exp', 'run', '-S', 'evaluate.max_test=16', '-n', 'smaller_test')
    llm = {s for s in LLM_STUDY if s.startswith('evaluate') or s == 'report_llm'}
    assert ran(out) == {'evaluate@base', 'evaluate@ncl', 'evaluate@das', 'report', 'docs', 'evaluate_quick@base', 'evaluate_quick@das', 'report_quick'} | llm, out[-2000:]
    assert 'smaller_test' in sh(repo, 'dvc', 'exp', 'list')


@pytest.mark.xdist_group('studied')   # the toy study's tests: one xdist work unit (make test's --dist loadgroup)
def test_report_rebuilds_from_git_alone(repo, studied, tmp_path):
    "A fresh clone has no models and no DVC cache: the A matrices and importance tensors in git are all the report needs."
    assert not (ROOT/'results'/'eval'/'.gitignore').exists() and not (repo/'results'/'eval'/'.gitignore').exists()
    c = tmp_path/'clone'; sh(tmp_path, 'git', 'clone', '-q', str(repo), str(c))
    assert not (c/'models'/'general').exists() and not (c/'models'/'runs'/'das').exists()   # no weights (models/ holds DVC's .gitignore files)
    assert (c/'results'/'eval'/'das.json').exists() and (c/'results'/'importance'/'das'/'run.json').exists()
    (c/'results'/'table.md').unlink()
    out = sh(c, 'dvc', 'repro', '-s', '-f', 'report')
    assert ran(out) == {'report'}, out[-2000:]
    assert (c/'results'/'table.md').read_text() == sh(repo, 'git', 'show', 'HEAD:results/table.md')   # the same table as the study's
    assert (c/'plots'/'report'/'importance_growth.png').exists()


PAPER_ON_CPU = {   # what a CPU changes in the paper profile: the model (a tiny random RoBERTa), the sizes, 2 gloo processes
    'base': {'model_path': 'tiny_roberta', 'num_threads': 1},
    'warmup': {'max_len': 32, 'max_train_docs': 40, 'eval_max_blocks': 4, 'eval_max_blocks_general': 4, 'eval_batch_size': 8},
    'general_importance': {'batch_size': 4, 'max_len': 32, 'importance_batches': 1, 'n_positions': 8},
    'continual': {'steps': 2, 'batch_size': 4, 'max_len': 32, 'importance_batches': 1,
                  'launcher': 'accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no'},
    'study': {'methods': ['das']},
    'llm': SMOKE['llm'],                  # the decoder's stages feed the docs site's lab notebooks: tiny here too
    'evaluate': {'seeds': [0], 'max_train': 24, 'max_test': 12, 'max_len': 32, 'mlm_batches': 1, 'mlm_max_blocks': 4},
    'docs': {'execute': False},
}


def test_paper_profile_runs_on_cpu_with_a_tiny_roberta(tmp_path_factory):
    "profiles/paper.yaml as a DVC experiment: RoBERTa, no warm-up, the user's six domains, the loop under accelerate, fine-tuning."
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM
    sys.path.insert(0, str(ROOT))
    from das.model import save_mlm
    r = new_repo(tmp_path_factory.mktemp('paper')/'repo', dirs=('nbs', 'das', 'profiles'), files=PIPELINE_FILES + ('params.yaml',))
    tok = AutoTokenizer.from_pretrained(str(ROOT/'data'/'base_model'))
    cfg = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=200, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    save_mlm(RobertaForMaskedLM(cfg), tok, r/'tiny_roberta')
    paper = yaml.safe_load((ROOT/'profiles'/'paper.yaml').read_text())
    words = 'a review of the new phone camera lens battery and screen on the table with citations of methods'.split()
    for i, d in enumerate(paper['continual']['order']):                     # the user's files, here made up
        spec = paper['custom_domains'][d]
        (r/spec['corpus']).mkdir(parents=True)
        (r/spec['corpus']/'t.txt').write_text(''.join(' '.join(words[(k * (i + 3) + j) % len(words)] for j in range(140)) + f' {d} {k}\n' for k in range(30)))
        (r/spec['task']).write_text('text,label\n' + ''.join(f'{d} example {k} {"good" if y else "bad"} {words[k % len(words)]},{"pos" if y else "neg"}\n'
                                                              for k in range(8) for y in (0, 1)))
    (r/'cpu.yaml').write_text(yaml.safe_dump(PAPER_ON_CPU))
    commit_repo(r, 'tiny_roberta/\n')
    out = sh(r, sys.executable, '-m', 'das.pipeline', 'profile', 'profiles/paper.yaml', 'cpu.yaml', '--name', 'paper_cpu')
    assert ran(out) == {'warmup', 'custom_domains', 'general_importance', 'train@das', 'evaluate@das', 'importance@das', 'report', 'docs'} | LLM, out[-3000:]
    res = json.loads((r/'results'/'eval'/'das.json').read_text())
    assert res['domain_tasks'] == paper['continual']['order'] and res['settings']['protocol'] == 'paper'
    assert json.loads((r/'models'/'general'/'config.json').read_text())['model_type'] == 'roberta'
    assert 'paper_cpu' in sh(r, 'dvc', 'exp', 'list')
