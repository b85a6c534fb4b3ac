"The figures the README quotes from committed results are in those results (they are copied, so a rerun must update them)."
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIR = r'[+-]?\d+\.\d{4} \+- \d+\.\d{4}'


def quoted(start: str, end: str) -> str:
    "The README's text from `start` to `end`."
    s = (ROOT/'README.md').read_text()
    assert start in s, f"README has no {start!r}"
    i = s.index(start)
    return s[i:s.index(end, i)]


def test_quick_profile_figures_in_the_readme_are_quick_table_md():
    text = quoted("its output, committed in `quick/table.md`", "The held-out evaluation")
    table = (ROOT/'quick'/'table.md').read_text()
    pairs = re.findall(PAIR, text)
    assert len(pairs) == 4
    for p in pairs: assert p.lstrip('+') in table, f"README quotes {p}, quick/table.md does not have it"
    share = re.search(r'adapting (\d+)% as much as NCL', text).group(1)
    assert f"nats, {share}%)" in table.split('**DAS vs NCL**')[1].split('\n')[0]
