"The committed figures (figures/, drawn by the report stage) match the committed data they were drawn from, are small, and the README shows them."
import json, re
from pathlib import Path
import pytest
from das.report import FIGURE_MAX_BYTES, FIGURES_RECORD, check_figures, input_hash

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT/'figures'
# the figures the issue asks for: the headline, knowledge forgetting per method, importance growth, 05_softmask's update ratio
EXPECTED = {'stability_plasticity.png', 'knowledge_forgetting.png', 'importance_growth.png', 'update_ratio.png'}


def test_every_figure_is_recorded_small_and_drawn_from_the_committed_data():
    rec = json.loads((FIG/FIGURES_RECORD).read_text())
    assert EXPECTED <= set(rec), f"figures.json lacks {EXPECTED - set(rec)}: rerun `dvc repro -s report`"
    assert check_figures(FIG, ROOT) == []
    for name in rec:
        b = (FIG/name).read_bytes()
        assert b[:8] == b'\x89PNG\r\n\x1a\n' and len(b) < FIGURE_MAX_BYTES, name
    assert {p.name for p in FIG.glob('*.png')} == set(rec), "a PNG in figures/ that no report run recorded"


def test_a_changed_input_is_caught(tmp_path):
    rec = json.loads((FIG/FIGURES_RECORD).read_text())['update_ratio.png']
    (tmp_path/'results').mkdir()
    for p in rec['inputs']: (tmp_path/p).write_bytes((ROOT/p).read_bytes())
    assert input_hash(rec['inputs'], tmp_path) == rec['sha256']
    (tmp_path/rec['inputs'][0]).write_bytes((ROOT/rec['inputs'][0]).read_bytes().replace(b'0.9', b'0.8', 1))
    assert input_hash(rec['inputs'], tmp_path) != rec['sha256']


def test_readme_and_notebooks_show_figures_that_exist():
    for f in [ROOT/'README.md', ROOT/'results'/'README.md', *sorted((ROOT/'nbs').glob('*.ipynb'))]:
        if not f.exists(): continue
        text = f.read_text()
        for ref in re.findall(r'!\[[^\]]*\]\(([^)\s]+\.png)\)', text):
            assert (f.parent/ref).resolve().exists(), f"{f.name} shows {ref}, which does not exist"
    readme = (ROOT/'README.md').read_text()
    shown = set(re.findall(r'!\[[^\]]*\]\(figures/([^)\s]+\.png)\)', readme))
    assert 'stability_plasticity.png' in shown
    assert len(shown) == len(re.findall(r'!\[[^\]]*\]\(figures/', readme)), "each figure once in the README"


@pytest.mark.slow
def test_update_ratio_data_is_what_05_softmask_computes():
    "Recomputes one point of each form under AdamW (a few seconds per point): the saved curve is the experiment's."
    data = json.loads((ROOT/'results'/'update_ratio.json').read_text())
    from das.report import update_ratio_curves
    got = update_ratio_curves(vs=(0.9,))
    for opt, forms in got['curves'].items():
        for f, (v,) in forms.items():
            assert abs(v - data['curves'][opt][f][data['importance'].index(0.9)]) < 1e-6, (opt, f)


def test_the_decoder_profiles_figures_are_recorded_and_current():
    fig = ROOT/'llm'/'figures'                     # drawn by report_llm (params.yaml llm.report.figures_dir)
    rec = json.loads((fig/FIGURES_RECORD).read_text())
    assert {'stability_plasticity.png', 'knowledge_forgetting.png'} <= set(rec), "rerun `dvc repro -s report_llm`"
    assert check_figures(fig, ROOT) == []
    assert {p.name for p in fig.glob('*.png')} == set(rec)
