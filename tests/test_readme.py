"""The README stays true: its findings and timings are the report's generated text, its other numbers come from
committed files, it stays short, and it shows figures and links that exist inside the repository."""
import configparser, inspect, json, re
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
    assert block(text, *markers('findings_llm')) == (ROOT/'llm'/'findings.md').read_text(), \
        "README's decoder findings differ from llm/findings.md: run `python -m das.report readme results/table.md README.md`"
    assert block(text, *markers('timings')) == timings_markdown(ROOT), "README's Timings differ from the stage records"
    assert block(PAGE.read_text(), START, END) == (ROOT/'results'/'table.md').read_text(), "results/README.md's table is stale"
    assert text.count('| step | time |') == 1, "one Timings table"


def test_findings_come_first_with_the_figure():
    text = README.read_text()
    head = text[:text.index('## Two commands')]
    assert '<!-- findings:start -->' in head and '](figures/stability_plasticity.png)' in head
    assert '<!-- findings_llm:start -->' in head and '](llm/figures/stability_plasticity.png)' in head, "the decoder's findings and figure"
    head = text[:text.index('](figures/stability_plasticity.png)')]   # the masked LM's findings and its figure: the first screen
    assert len(head.splitlines()) <= 50, "the findings and the headline figure fit a first screen"


def test_short_and_no_long_prose_lines():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    long = [l for l in prose(text) if len(l) > 120]
    assert not long, f"prose lines over 120 characters: {long}"
    for f in ('results/findings.md', 'llm/findings.md'): assert max(map(len, (ROOT/f).read_text().splitlines())) <= 120, f
    long = [l for l in prose(PAGE.read_text()) if len(l) > 120]
    assert not long, f"results/README.md: prose lines over 120 characters: {long}"


def typed_numbers(text: str) -> list:
    "(number, line) for every number typed in prose: outside code spans, link targets, fences, tables, generated blocks."
    out = []
    for l in prose(text):
        l = re.sub(r'`[^`]*`', '', re.sub(r'\]\([^)]*\)', ']', l))
        out += [(n, l.strip()) for n in re.findall(r'(?<![\w.,\-])\d+(?:,\d{3})*(?:\.\d+)?(?=x\b|(?![\w.\-]*\w))', l)]   # 2.8x too
    return out


def check_typed_numbers(path: Path, checks: dict):
    "Every number typed in `path`'s prose is a key of `checks`, and each check (against a committed file) holds."
    seen = set()
    for n, l in typed_numbers(path.read_text()):
        assert n in checks, f"{path.relative_to(ROOT)} types the number {n} ({l[:80]}...): generate it, or check it here"
        seen.add(n)
    for n in seen: assert checks[n](), f"{path.relative_to(ROOT)}: its {n} no longer matches its source"


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
    check_typed_numbers(README, checks)



def test_results_page_numbers_come_from_committed_files():
    "Every number in results/README.md's prose (outside its generated table, code and tables) is one of these, each checked."
    from das.data import HELDOUT_FRAC, Domain, min_task_examples
    from das.report import figure_forgetting, protected_share
    p = yaml.safe_load((ROOT/'params.yaml').read_text())
    paper = yaml.safe_load((ROOT/'profiles'/'paper.yaml').read_text())
    pc = paper['continual']
    checks = {
        '2': lambda: "2 * K[m][y]['se']" in inspect.getsource(figure_forgetting),         # the figure's +- 2 SE bars
        '0.5': lambda: inspect.signature(protected_share).parameters['threshold'].default == 0.5,
        '80': lambda: p['continual']['steps'] == 80,                                       # the study's steps per domain
        '5': lambda: HELDOUT_FRAC == 0.05 and len(paper['evaluate']['seeds']) == 5,        # held-out 5 %; the paper's seeds
        '70': lambda: round(1 - Domain.dev - Domain.test, 6) == 0.7,                       # the task split 70/10/20
        '10': lambda: Domain.dev == 0.1,
        '20': lambda: Domain.test == 0.2,
        '6': lambda: min_task_examples(Domain.dev, Domain.test) == 6,                      # texts a label needs
        '2,580': lambda: pc['steps'] == 2580,                                              # the paper's profile
        '248': lambda: pc['batch_size'] == 248,
        '164': lambda: pc['max_len'] == 164,
    }
    check_typed_numbers(PAGE, checks)

def test_quick_profile_as_the_readme_says():
    p = yaml.safe_load((ROOT/'params.yaml').read_text())
    text = README.read_text()
    said = re.search(r'then (`base`.*?) on the first two domains', ' '.join(prose(text))).group(1)
    assert re.findall(r'`(\w+)`', said) == p['quick']['methods']
    assert p['quick']['continual']['order'] == p['continual']['order'][:2]


def test_decoder_profile_as_the_readme_says():
    p = yaml.safe_load((ROOT/'params.yaml').read_text())['llm']
    said = re.search(r'on the first (\w+) domains, .*?; (`ncl`.*?) run again with other training seeds', ' '.join(prose(README.read_text())))
    assert said, "the README describes the decoder profile"
    assert {'two': 2, 'three': 3, 'four': 4}[said.group(1)] == len(p['continual']['order'])
    assert re.findall(r'`(\w+)`', said.group(2)) == p['seeded']


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
