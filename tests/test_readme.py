"""The README stays true: its findings and timings are the report's generated text, its other numbers come from
committed files, it stays short, and it shows figures and links that exist inside the repository."""
import configparser, json, re
from pathlib import Path
import yaml
from das.report import END, START, markers, timings_markdown, _word

ROOT = Path(__file__).resolve().parents[1]
README = ROOT/'README.md'
PAGE = ROOT/'results'/'README.md'


def block(text: str, start: str, end: str) -> str:
    "The text between two markers."
    assert start in text and end in text, f"no {start!r} ... {end!r}"
    return text.split(start, 1)[1].split(end, 1)[0].strip('\n') + '\n'


def prose(text: str) -> list:
    "The README's prose lines: outside code fences, generated blocks and tables."
    out, fence, gen = [], False, False
    for l in text.splitlines():
        if l.startswith('```'): fence = not fence; continue
        if re.match(r'<!-- \w+:start -->', l): gen = True; continue
        if re.match(r'<!-- \w+:end -->', l): gen = False; continue
        if not (fence or gen or l.startswith('|')): out.append(l)
    return out


def test_findings_and_timings_are_generated():
    text = README.read_text()
    assert block(text, *markers('findings')) == (ROOT/'results'/'findings.md').read_text(), \
        "README's findings differ from results/findings.md: run `python -m das.report readme results/table.md README.md`"
    assert block(text, *markers('timings')) == timings_markdown(ROOT), "README's Timings differ from the stage records"
    assert block(PAGE.read_text(), START, END) == (ROOT/'results'/'table.md').read_text(), "results/README.md's table is stale"
    assert text.count('| step | time |') == 1, "one Timings table"


def test_findings_come_first_with_the_figure():
    text = README.read_text()
    head = text[:text.index('## Two commands')]
    assert '<!-- findings:start -->' in head and '](figures/stability_plasticity.png)' in head
    assert len(head.splitlines()) <= 50, "the findings and the headline figure fit a first screen"


def test_short_and_no_long_prose_lines():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    long = [l for l in prose(text) if len(l) > 120]
    assert not long, f"prose lines over 120 characters: {long}"
    assert max(map(len, (ROOT/'results'/'findings.md').read_text().splitlines())) <= 120


def test_typed_numbers_come_from_committed_files():
    "Every number in the README's prose (outside code, tables and generated blocks) is one of these, each checked."
    p = yaml.safe_load((ROOT/'params.yaml').read_text())
    ini = configparser.ConfigParser(); ini.read(ROOT/'settings.ini')
    lock = (ROOT/'requirements.lock').read_text()
    machine = json.loads((ROOT/'benchmarks'/'results'/'softmask_cost.json').read_text())['machine']
    checks = {
        '2023': lambda: True,                                                  # the paper's venue and year (ICLR 2023): a name
        '3.11': lambda: ini['DEFAULT']['min_python'] == '3.11',
        '2': lambda: (machine['nproc'] == 2 and _word({'mean': 2.01, 'se': 1.0}) == 'more' and _word({'mean': 1.99, 'se': 1.0}) == 'as much'
                      and re.search(r'^nbdev==2\.', lock, re.M) is not None),   # 2 cores; "beyond 2 standard errors"; nbdev 2
        '1': lambda: True,                                                     # the formula "(1 - importance)"
    }
    seen = set()
    for l in prose(README.read_text()):
        l = re.sub(r'`[^`]*`', '', re.sub(r'\]\([^)]*\)', ']', l))
        for n in re.findall(r'(?<![\w.\-])\d+(?:\.\d+)?(?![\w.\-]*\w)', l):
            assert n in checks, f"README types the number {n} ({l.strip()[:80]}...): generate it, or check it here"
            seen.add(n)
    for n in seen: assert checks[n](), f"the README's {n} no longer matches its source"


def test_quick_profile_as_the_readme_says():
    p = yaml.safe_load((ROOT/'params.yaml').read_text())
    text = README.read_text()
    said = re.search(r'then (`base`.*?) on the first two domains', ' '.join(prose(text))).group(1)
    assert re.findall(r'`(\w+)`', said) == p['quick']['methods']
    assert p['quick']['continual']['order'] == p['continual']['order'][:2]


def test_links_and_figures_stay_inside_the_repository():
    for f in (README, PAGE):
        text = f.read_text()
        for ref in re.findall(r'\]\(([^)\s#]+)[^)]*\)', text):
            if re.match(r'https?://', ref): continue
            target = (f.parent/ref).resolve()
            assert target.is_relative_to(ROOT), f"{f.name} links outside the repository: {ref}"
            assert target.exists(), f"{f.name} links to {ref}, which does not exist"
        assert '../shared' not in text
    readme = README.read_text()
    for ref in re.findall(r'`([\w./-]+\.(?:ipynb|json|md|py|png))`', readme):   # files the README names are in git
        assert (ROOT/ref).exists() or (ROOT/'tests'/ref).exists(), f"README names {ref}, which is not in the repository"
    shown = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', readme)
    assert len(shown) == len(set(shown)), "each figure once"
