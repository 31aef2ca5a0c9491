"""Through ``python -m tuner.study`` and the real simulator: an IPv6 bind address works, and a space whose
name is a path writes nothing outside ``--out``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from tuner.core.slug import slug
from tuner.testing.study_cli import ROOT, small_space, study_cmd


def test_an_ipv6_host_and_a_path_as_name_stay_inside_out(tmp_path: Path) -> None:
    data = yaml.safe_load(small_space(tmp_path).read_text())
    data["launch"]["host"] = "[::1]"
    data["name"] = "../../escape"
    data["seed_trials"] = data["seed_trials"][:1]
    space = tmp_path / "hostile.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    cmd = study_cmd(space, tmp_path, trials=1)
    i = cmd.index("--study")
    del cmd[i : i + 2]  # the study is named by the space: "../../escape"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (trial,) = optuna.load_study(study_name="../../escape", storage=f"sqlite:///{tmp_path}/t.db").get_trials()
    argv = trial.user_attrs["command"]
    assert trial.state is TrialState.COMPLETE and argv[argv.index("--host") + 1] == "::1"
    out = tmp_path / "out"
    assert (out / slug("../../escape") / "best-launch.sh").is_file()
    for outside in (out / "../../escape", ROOT / "../../escape", ROOT / "storage" / "../../escape"):
        assert not outside.resolve().exists(), outside  # where the name, used as a path, would have written
