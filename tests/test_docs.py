"""Tests of das.docs: the tutorial site reads like nbdev's documentation, not like raw notebooks.

A tiny two-notebook tutorial (built here with nbformat) is rendered: cells whose first line is `#| hide` are
gone, no `#|` directive line is shown, exported code is shown and names the module it lands in, pages link to
the previous and next notebook and to the index, each page has a table of contents of its headings, and
front-end notices (tqdm's "IProgress not found", the debugger's and the kernel's) are not on the page while the
notebook's own stderr is. Executing a notebook for the site raises none of those notices. A slow test opens the
index in headless Chromium (`make docs` installs it; `make test` does not need it).
"""
import re, shutil
from html.parser import HTMLParser
from pathlib import Path
import nbformat as nbf
import pytest
from das import docs

NOTICES = ('/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets. '
           'See https://ipywidgets.readthedocs.io/en/stable/user_install.html\n'
           '  from .autonotebook import tqdm as notebook_tqdm\n'
           '0.00s - Debugger warning: It seems that frozen modules are being used, which may\n'
           '0.00s - make the debugger miss breakpoints. Please pass -Xfrozen_modules=off\n'
           '0.00s - to python to disable frozen modules.\n'
           '0.00s - Note: Debugging will proceed. Set PYDEVD_DISABLE_FILE_VALIDATION=1 to disable this validation.\n'
           '[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication is plain text.\n')


class Page(HTMLParser):
    "Text, element ids and links (href, rel, text) of an HTML page."
    def __init__(self, path):
        super().__init__(); self.path, self.ids, self.links, self.chunks, self._a = Path(path), set(), [], [], None
        self.html = self.path.read_text(encoding='utf-8'); self.feed(self.html)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self._a = {'href': a['href'], 'rel': a.get('rel', ''), 'text': ''}; self.links.append(self._a)
    def handle_endtag(self, tag):
        if tag == 'a': self._a = None
    def handle_data(self, d):
        self.chunks.append(d)
        if self._a is not None: self._a['text'] += d
    @property
    def text(self): return ''.join(self.chunks)
    def rel(self, r): return [l['href'] for l in self.links if r in l['rel'].split()]
    def target(self, href): return (self.path.parent/href.split('#')[0]).resolve()


def tiny(path, exp, title, stderr=None):
    "A notebook as nbdev writes one: default_exp, title and summary, exported and hidden cells, headings."
    nb = nbf.v4.new_notebook()
    out = nbf.v4.new_code_cell('square(3)')
    out.outputs = [nbf.v4.new_output('execute_result', {'text/plain': '9'}, execution_count=1)]
    if stderr: out.outputs.insert(0, nbf.v4.new_output('stream', name='stderr', text=stderr))
    nb.cells = [nbf.v4.new_code_cell(f'#| default_exp {exp}'),
                nbf.v4.new_markdown_cell(f'# {title}\n\n> What {exp} is about, in one line.'),
                nbf.v4.new_code_cell('#| export\nimport math'),
                nbf.v4.new_code_cell('#| hide\nfrom fastcore.test import HIDDEN_TEST_IMPORT'),
                nbf.v4.new_markdown_cell('## Squares and `roots`\n\nWhy squares come first.'),
                nbf.v4.new_code_cell('#|export\ndef square(x): return x*x'),
                nbf.v4.new_code_cell('#| exporti\n#| echo: false\ndef _root(x): return math.sqrt(x)'),
                out,
                nbf.v4.new_markdown_cell('### A detail\n\nMore.'),
                nbf.v4.new_code_cell('#| hide\nimport nbdev; nbdev.nbdev_export()')]
    nbf.write(nb, path)
    return path


@pytest.fixture
def site(tmp_path):
    (tmp_path/'nbs').mkdir()
    nbs = [tiny(tmp_path/'nbs'/'00_alpha.ipynb', 'alpha', 'Alpha things', stderr=NOTICES + 'a warning the notebook itself raised\n'
                + '\r  0%|          | 0/3 [00:00<?, ?it/s]\r100%|██████████| 3/3 [00:00<00:00]\n'),
           tiny(tmp_path/'nbs'/'01_beta.ipynb', 'beta', 'Beta things')]
    lab = [tiny(tmp_path/'nbs'/'report.ipynb', 'report', 'The report')]
    idx = docs.render(nbs, tmp_path/'site', lab)
    return tmp_path/'site', idx


def test_hidden_cells_and_directives_are_not_shown(site):
    out, _ = site
    for f in ('00_alpha.html', '01_beta.html', 'runs/report.html'):
        p = Page(out/f)
        assert 'HIDDEN_TEST_IMPORT' not in p.html and 'nbdev.nbdev_export' not in p.html, f    # `#| hide` cells are gone
        assert '#|' not in p.text and 'default_exp' not in p.text, f                     # no directive line is shown
        assert 'def square(x): return x*x' in p.text and 'import math' in p.text, f      # exported code is shown
        assert 'def _root' not in p.text, f                                               # `#| echo: false`: input hidden


def test_exported_code_names_its_module(site):
    out, _ = site
    p = Page(out/'00_alpha.html')
    chunks = p.html.split('jp-CodeCell')[1:]                                             # one chunk per code cell
    exported = [c for c in chunks if 'square' in c and 'def' in c]
    plain = [c for c in chunks if '9</pre>' in c]
    assert exported and all('das.alpha' in c for c in exported)
    assert plain and not any('das.alpha' in c for c in plain)                            # a plain cell is not marked
    assert 'das.beta' in (out/'01_beta.html').read_text() and 'das.report' in (out/'runs'/'report.html').read_text()


def test_navigation_links_point_at_existing_pages(site):
    out, idx = site
    a, b, r = Page(out/'00_alpha.html'), Page(out/'01_beta.html'), Page(out/'runs'/'report.html')
    assert {a.target(h) for h in a.rel('next')} == {(out/'01_beta.html').resolve()}        # top bar and page bottom
    assert {b.target(h) for h in b.rel('prev')} == {(out/'00_alpha.html').resolve()}
    assert b.rel('next') == [] and a.rel('prev') == [] and r.rel('prev') == r.rel('next') == []
    for p in (a, b, r):
        assert p.rel('index') and all(p.target(h) == idx.resolve() for h in p.rel('index'))
        for l in p.links:                                                                # every local link resolves
            if not l['href'].startswith(('#', 'http:', 'https:', 'mailto:')): assert p.target(l['href']).exists(), (p.path, l)
    i = Page(idx)
    assert {i.target(l['href']) for l in i.links if not l['href'].startswith('#')} >= {
        (out/f).resolve() for f in ('00_alpha.html', '01_beta.html', 'runs/report.html')}
    for s in ('Alpha things', 'Beta things', 'The report', 'What alpha is about, in one line.'): assert s in i.text, s


def test_table_of_contents_from_headings(site):
    out, _ = site
    for f in ('00_alpha.html', 'runs/report.html'):
        p = Page(out/f)
        toc = {l['text'].strip(): l['href'] for l in p.links if l['href'].startswith('#') and l['text'].strip() != '¶'}
        assert {'Squares and roots', 'A detail'} <= set(toc), toc
        assert all(h[1:] in p.ids for h in toc.values()), (toc, p.ids)                   # each entry lands on its heading


def test_no_notices_and_nothing_fetched(site):
    out, _ = site
    p = Page(out/'00_alpha.html')
    for n in ('IProgress', 'ipywidgets', 'Debugger warning', 'frozen_modules', 'TCP without encryption'): assert n not in p.html, n
    assert 'a warning the notebook itself raised' in p.text                              # the notebook's own stderr stays
    assert '100%' in p.text and '0/3' not in p.text                                      # a progress bar shows its last state
    for f in ('index.html', '00_alpha.html', 'runs/report.html'):
        assert not re.search(r'''(src|href)=["']?(https?:)?//''', (out/f).read_text()), f    # offline: no CDN script or style


def test_execute_raises_no_notice(tmp_path, capfd):
    "A notebook executed for the site: tqdm.auto without ipywidgets and the kernel start leave no notice."
    nb = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell('from tqdm.auto import tqdm\nfor i in tqdm(range(3)): pass'),
                                    nbf.v4.new_code_cell('import sys; print("own message", file=sys.stderr)')])
    nb.metadata.kernelspec = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbf.write(nb, tmp_path/'k.ipynb')
    done = docs.execute([tmp_path/'k.ipynb'], tmp_path/'executed', cwd=tmp_path)
    cells = nbf.read(done[0], 4).cells
    text = ''.join(o.get('text', '') for c in cells for o in c.outputs)
    assert 'own message' in text and '3/3' in text
    assert 'IProgress' not in text and 'Debugger' not in text
    assert 'TCP without encryption' not in capfd.readouterr().err


@pytest.mark.slow
def test_screenshot_of_the_index(site, tmp_path):
    "The built index opened in headless Chromium (as `make docs` does): a non-blank 1280x1600 PNG."
    if not (shutil.which('chromium') or shutil.which('chromium-browser')): pytest.skip('no chromium: `make docs` installs it')
    out, idx = site
    png = docs.screenshot(idx, tmp_path/'index.png')
    from PIL import Image
    im = Image.open(png)
    assert im.size == (1280, 1600) and sum(n > 0 for n in im.convert('L').resize((64, 80)).histogram()) > 8
