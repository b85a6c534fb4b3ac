"The benchmark scripts' shared helpers (benchmarks/common.py): run specs and the study's settings."
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))
from common import dap_config, method_params, parse_spec, scalar, study_params  # noqa: E402
from das.core import DasError  # noqa: E402


def test_scalar_reads_exponents_as_numbers():
    assert scalar('3e-4') == 3e-4 and isinstance(scalar('3e-4'), float)      # plain YAML gives the string '3e-4'
    assert scalar('2') == 2 and scalar('0.5') == 0.5 and scalar('false') is False and scalar('grad') == 'grad'


def test_parse_spec_splits_shared_settings_from_method_parameters():
    assert parse_spec('ncl_lr3e-4=ncl,lr=3e-4') == ('ncl_lr3e-4', 'ncl', {}, {'lr': 3e-4})
    assert parse_spec('das_s2=das,strength=2.0,steps=40') == ('das_s2', 'das', {'strength': 2.0}, {'steps': 40})
    assert parse_spec('das=das') == ('das', 'das', {}, {})
    with pytest.raises(DasError, match='no label'): parse_spec('das')
    with pytest.raises(DasError, match='not key=value'): parse_spec('x=das,strength')


def test_dap_config_is_the_study_settings_with_overrides():
    p = study_params()
    c = dap_config(p)
    assert c.steps == p['continual']['steps'] and c.lr == p['continual']['lr'] and c.seed == p['base']['seed']
    assert dap_config(p, lr=3e-4).lr == 3e-4 and dap_config(p, lr=3e-4).steps == c.steps
    with pytest.raises(DasError, match='unknown setting'): dap_config(p, order=['movie'])
    with pytest.raises(DasError, match='must be > 0'): dap_config(p, **parse_spec('x=ncl,lr=-1')[3])


def test_method_params_layer_overrides_on_params_yaml():
    p = study_params()
    assert method_params('das', {'strength': 2.0}, p) == {**p['methods']['das'], 'strength': 2.0}
    assert method_params('not_in_params', {'k': 1}, p) == {'k': 1}


def test_hat_masks_redraws_the_task_embedding_hat_started_from():
    "benchmarks/hat_masks.py counts the units whose mask changed state against e_t as TaskMasks.start drew it."
    import torch
    from hat_masks import start_embedding
    from das.cl_plugins import TaskMasks
    shapes = {'head': (2, 4), 'intermediate': (2, 8), 'output': (2, 6)}
    m = TaskMasks(shapes); m.start('d', steps=5, seed=1003)
    e0 = start_embedding(shapes, 1003)
    assert list(e0) == list(m.e) and all(torch.equal(e0[k], m.e[k].detach()) for k in shapes)
    assert not torch.equal(start_embedding(shapes, 1004)['head'], e0['head'])


def test_minus_is_the_paired_difference_per_token():
    "common.minus: A - B per masked token over the same blocks; a shift equal on every token has SE 0."
    from common import minus
    a = {'loss_sum': [[4.0, 6.0]], 'n': [[2, 3]]}; b = {'loss_sum': [[2.0, 3.0]], 'n': [[2, 3]]}
    assert minus(a, b)['mean'] == pytest.approx(1.0)
    assert minus(b, {'loss_sum': [[1.0, 1.5]], 'n': [[2, 3]]}) == {'mean': pytest.approx(0.5), 'se': pytest.approx(0.0)}
    with pytest.raises(DasError, match='same blocks'): minus(a, {'loss_sum': [[1.0]], 'n': [[1]]})


def test_profile_params_overlays_the_decoder_groups():
    "common.profile_params('llm'): llm.continual over `continual`, llm.evaluate over `evaluate`, as the decoder's stages do."
    from common import profile_params
    p = study_params()
    q = profile_params('llm', p)
    assert q['continual'] == {**p['continual'], **p['llm']['continual']} and q['continual']['order'] == p['llm']['continual']['order']
    assert q['evaluate']['mlm_max_blocks'] == p['llm']['evaluate']['mlm_max_blocks']
    assert profile_params('study', p) == p and p['continual'] != q['continual']     # the study's params untouched
    with pytest.raises(DasError, match='unknown profile'): profile_params('gpt', p)


def test_tradeoff_scores_a_finished_run_only_when_it_matches(tmp_path):
    "benchmarks/tradeoff.py's run=FOLDER: a pipeline run stands for a config only with the same method, parameters, settings and order."
    from tradeoff import check_run
    from das.continual import make_method
    from das.core import save_json
    p = study_params()
    cfg = dap_config(p)
    m = make_method('ncl')
    man = {'method': 'ncl', 'params': m.params, 'order': ['movie', 'computing'], 'config': cfg.record(),
           'checkpoints': [{'t': 0}, {'t': 1}]}
    save_json(man, tmp_path/'run'/'run.json')
    assert check_run(tmp_path/'run', m, cfg, ['movie', 'computing']) == tmp_path/'run'
    with pytest.raises(DasError, match='config differ'): check_run(tmp_path/'run', m, dap_config(p, lr=3e-4), ['movie', 'computing'])
    with pytest.raises(DasError, match='method'): check_run(tmp_path/'run', make_method('das'), cfg, ['movie', 'computing'])
    with pytest.raises(DasError, match='2 checkpoints for 3'): check_run(tmp_path/'run', m, cfg, ['movie', 'computing', 'pubmed77'])
    with pytest.raises(DasError, match='no finished run'): check_run(tmp_path/'nothing', m, cfg, ['movie'])
