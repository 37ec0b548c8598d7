import inspect
import json
import re

import pytest


def test_arch_json_paper_values(cli):
    for blocks, pools, params in [(2, "2,2", 8074), (3, "2,2,2", 32730), (4, "2,2,2,2", 130682)]:
        out = json.loads(cli("arch", "--blocks", blocks, "--pools", pools, "--json", check_rc=0).stdout)
        assert out["params"] == params
    out = json.loads(cli("arch", "--blocks", 2, "--pools", "8,8", "--pixel-size", 0.02152, "--json").stdout)
    assert out["name"] == "n2_p88" and out["rf_px"] == 392
    assert out["rf_nm"] == pytest.approx(8.436, abs=1e-3)  # the paper's 8.4 nm
    out = json.loads(cli("arch", "--blocks", 2, "--pools", "2,2", "--dilations", "1,1,2", "--json").stdout)
    assert (out["name"], out["rf_px"], out["rf_nm"]) == ("n2_p22_d112", 60, None)


def test_arch_table_and_sweep(cli):
    table = cli("arch", "--blocks", 2, "--pools", "4,4", check_rc=0).stdout
    assert "n2_p44" in table and "8,074" in table
    rows = json.loads(cli("arch", "--sweep", "--blocks", 2, "--max-rf-px", 512, "--json", check_rc=0).stdout)
    assert [r["rf_px"] for r in rows] == [44, 64, 80, 104, 120, 152, 200, 232, 392]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--blocks", 2, "--pools", "2,2,2"], "pools has 3 entries"),
        (["--blocks", 2, "--pools", "2,2", "--dilations", "1,2"], "dilations has 2 entries"),
        (["--blocks", 2, "--pools", "3,2"], "pool size 3"),
        (["--blocks", 2, "--pools", "a,b"], "comma-separated integers"),
        (["--blocks", 2], "give --pools"),
    ],
)
def test_arch_bad_input_one_line_exit_2(cli, args, needle):
    proc = cli("arch", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # argparse adds its usage line


def test_arch_table_csv(cli, tmp_path):
    import pandas as pd

    out = tmp_path / "arch.csv"
    cli("arch-table", "--blocks", 2, 3, "--max-rf-px", 128, "--out", out, check_rc=0)
    df = pd.read_csv(out)
    assert set(df.blocks) == {2, 3} and df.rf_px.max() <= 128
    assert df.loc[df.name == "n2_p44", "params"].item() == 8074
    assert not list(tmp_path.glob(".*part*"))


def test_rf_figures_do_not_import_pytorch(tmp_path):
    """A figure job imports only its own figure module; the RF plots need no PyTorch (1.2 s of a 3-s job)."""
    import subprocess
    import sys

    code = ("import sys\nfrom rfseg.errors import UserError\nfrom rfseg.figures import draw\n"
            f"try:\n    draw('dice-vs-rf', 'x', {str(tmp_path / 'f.png')!r}, metrics={str(tmp_path / 'no.csv')!r})\n"
            "except UserError:\n    pass\nprint('rf' in sys.modules['rfseg.figures'].__dict__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_figure_with_missing_input_fails_clearly(cli, tmp_path):
    proc = cli("figure", "dice-vs-rf", "--dataset", "x", "--metrics", tmp_path / "nope.csv", "--out",
               tmp_path / "f.png")
    assert proc.returncode == 2 and "nope.csv: input of this figure is missing" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "f.png").exists()
    proc = cli("figure", "dice-vs-rf", "--dataset", "x", "--out", tmp_path / "f.png")
    assert proc.returncode == 2 and "needs --metrics" in proc.stderr


def test_help_is_for_users_and_states_the_defaults(cli):
    from rfseg.stages.train import TrainConfig

    top = cli("--help", check_rc=0).stdout
    assert "receptive field" in top and "Stage:" not in top and "UserError" not in top
    train = " ".join(cli("train", "--help", check_rc=0).stdout.split())
    defaults = TrainConfig()
    for option, value in [("--epochs", defaults.epochs), ("--batch-size", defaults.batch_size),
                          ("--lr", defaults.lr), ("--augment", defaults.augment)]:
        assert re.search(rf"  ?{option} \S+ (?:(?! --).)*?\(default: {re.escape(str(value))}\)", train), option


def test_simulate_help_states_the_realism_defaults_in_the_options_units(cli):
    from rfseg.blocks.simulate.hrtem import simulate_image

    sim = " ".join(cli("simulate", "--help", check_rc=0).stdout.split())
    defaults = inspect.signature(simulate_image).parameters
    for option, value in [("--image-spread-nm", defaults["image_spread_a"].default / 10),
                          ("--defocus-spread-nm", defaults["defocus_spread_a"].default / 10),
                          ("--detector-dqe", defaults["detector_dqe"].default),
                          ("--shapes", ",".join(defaults["shapes"].default))]:
        assert re.search(rf"  ?{option} \S+ (?:(?! --).)*?\(default: {re.escape(str(value))}\)", sim), option


def test_a_command_reuses_the_memory_it_frees_instead_of_faulting_it_back_in():
    """Each command's process keeps freed blocks for its next allocations: cycles of writing and freeing 80 MB of
    4 MB blocks, as a training step does with its activations, cost no page faults after the first (glibc's default
    gives large blocks back and faults every page in again, 0.1 million times here)."""
    import subprocess
    import sys

    code = """
import resource
import numpy as np
from rfseg.cli import reuse_freed_memory
assert reuse_freed_memory()
def cycle():
    blocks = [np.ones(1 << 19) for _ in range(20)]
    del blocks
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    pages_written = 10 * 20 * (4 << 20) // 4096
    assert faults < 0.01 * pages_written
