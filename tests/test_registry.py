"""The registry (names -> tracker, trainer, weights file) and the weights files' one reader and writer."""
import ast
import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from acvm import registry
from acvm.cli import main
from acvm.registry import ALIASES, MODELS, TRAINERS, make_tracker, train_command, trainer, weights_file
from acvm.tracker import Tracker
from acvm.training import batches, fit, train_and_save
from acvm.weights import backbone_state, load_weights, read_weights, save_weights, training_meta

from conftest import ROOT


def _target(spec):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_entry_resolves(name):
    model = MODELS[name]
    if model.tracker:
        cls = _target(model.tracker)
        assert issubclass(cls, Tracker) and cls.name == name
    if model.trainer:
        assert callable(_target(model.trainer))
    if model.weights:
        assert weights_file(name).parent == registry.WEIGHTS_DIR
    for first in model.starts_from:
        assert MODELS[first].weights, f"{name} starts from {first}, which has no weights file"


def test_modules_read_the_files_the_registry_names():
    import acvm.d3s, acvm.iounet, acvm.mdnet, acvm.siamfc, acvm.siamrpn, acvm.stark
    assert acvm.siamfc.WEIGHTS == weights_file("siamfc")
    assert acvm.siamrpn.WEIGHTS == weights_file("siamrpn") and acvm.siamrpn.SIAMFC_WEIGHTS == weights_file("siamfc")
    assert acvm.mdnet.WEIGHTS == weights_file("mdnet")
    assert acvm.iounet.WEIGHTS == weights_file("atom") == weights_file("iounet")
    assert acvm.d3s.DEFAULT_WEIGHTS == weights_file("d3s")
    assert acvm.stark.WEIGHTS == weights_file("stark") and acvm.stark.BASE_WEIGHTS == weights_file("stark-base")


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.weights])
def test_shipped_weights_read_back(name):
    path = weights_file(name)
    if not path.is_file():
        pytest.skip(f"{path.name} not trained here")
    state = read_weights(path)
    assert state["state_dict"] and all(torch.is_tensor(v) for v in state["state_dict"].values())
    assert "command" in state["meta"] and "steps" in state["meta"]


def test_train_atom_is_train_iounet(monkeypatch, tmp_path, capsys):
    import acvm.iounet
    seen = []
    monkeypatch.setattr(acvm.iounet, "train", lambda **kw: seen.append(kw) or kw["out"])
    assert ALIASES["iounet"] == "atom" and TRAINERS["atom"] == TRAINERS["iounet"] == "acvm.iounet:train"
    for name in ("atom", "iounet"):
        assert main(["train", name, "--steps", "1"]) == 0
    assert [kw["out"] for kw in seen] == [str(weights_file("atom"))] * 2
    assert trainer("atom") is trainer("iounet") is acvm.iounet.train
    with pytest.raises(SystemExit):
        main(["train", "dcf"])
    assert "unknown model 'dcf' to train; choose one of: " in capsys.readouterr().err


def test_names_that_do_not_track():
    with pytest.raises(ValueError, match="trains the network of `atom`"):
        make_tracker("iounet")
    with pytest.raises(ValueError, match="unknown tracker 'stark-base'"):
        make_tracker("stark-base")
    with pytest.raises(ValueError, match="opencv-csrt takes no settings, got weights"):
        make_tracker("opencv-csrt", weights="x.pt")
    with pytest.raises(ValueError, match="'dcf' has no weights file"):
        weights_file("dcf")


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_interface_and_opencv_adapter_do_not_import_each_other():
    tracker = _imports(ROOT / "acvm" / "tracker.py")
    opencv = _imports(ROOT / "acvm" / "opencv_trackers.py")
    assert not {".opencv_trackers", ".registry", "acvm.opencv_trackers"} & tracker
    assert ".tracker" in opencv and not {".registry", "acvm.registry"} & opencv
    # and importing the interface pulls in no tracker, nor torch
    code = ("import sys, acvm.tracker; heavy = [m for m in ('acvm.opencv_trackers', 'acvm.registry', 'torch', "
            "'acvm.siamfc') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_train_command_names_what_makes_a_file(tmp_path):
    assert train_command(weights_file("siamrpn")).endswith("`acvm train siamrpn`")
    assert train_command(weights_file("atom")).endswith("`acvm train atom`")
    assert train_command(tmp_path / "siamfc.pt") == f"`acvm train siamfc --out {tmp_path / 'siamfc.pt'}`"
    assert train_command(tmp_path / "mine.pt").startswith(f"`acvm train NAME --out {tmp_path / 'mine.pt'}`")


def test_read_weights_names_missing_damaged_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no weights at .*mdnet\.pt; make them with .*acvm train mdnet"):
        read_weights(tmp_path / "mdnet.pt")
    model = torch.nn.Linear(3, 2)
    good = save_weights(tmp_path / "good.pt", model, {"steps": 1})
    assert not (tmp_path / "good.pt.tmp").exists()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])     # a download or copy cut short
    with pytest.raises(ValueError, match=r"cut\.pt is not a readable weights file"):
        read_weights(cut)
    text = tmp_path / "text.pt"
    text.write_text("not a torch file\n")
    with pytest.raises(ValueError, match=r"text\.pt is not a readable weights file"):
        read_weights(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is not a readable weights file"):
        read_weights(empty)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"noise\.pt is not a readable weights file") as info:
        read_weights(noise)
    assert "weights_only" not in str(info.value)      # never the advice to unpickle an unknown file
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.zeros(3), foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt holds no 'state_dict'"):
        read_weights(foreign)
    with pytest.raises(ValueError, match=r"good\.pt does not fit Linear"):
        load_weights(good, torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"good\.pt has no 'backbone\.\*' entries"):
        backbone_state(good)


def test_a_tracker_given_a_damaged_file_names_it(tmp_path):
    bad = tmp_path / "siamfc.pt"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match=r"siamfc\.pt is not a readable weights file"):
        make_tracker("siamfc", weights=str(bad))
    with pytest.raises(FileNotFoundError, match="pass weights='random'"):
        make_tracker("siamfc", weights=str(tmp_path / "none.pt"))


def test_train_and_save_is_fit_then_the_file(tmp_path):
    # the skeleton against the loop it wraps: same seed, same batches -> the same weights
    def sample(rng):
        x = rng.normal(size=3).astype(np.float32)
        return {"x": x, "y": np.float32(x.sum())}

    def loss(model, batch):
        return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()

    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 1)
    fit(reference, loss, lambda s: batches(sample, 4, 5, 0, s), 6, lr=0.05, seed=5, progress=False)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    out = tmp_path / "m.pt"
    path = train_and_save(model, loss, sample, steps=6, seed=5, data=None, out=out, batch_size=4, workers=0,
                          lr=0.05, progress=False, loss_curve=3, recipe="test")
    assert path == out and not (tmp_path / "m.pt.ckpt").exists()
    state = read_weights(out)
    for k, v in reference.state_dict().items():
        assert torch.equal(state["state_dict"][k], v)
    meta = state["meta"]
    assert meta["steps"] == 6 and meta["seed"] == 5 and meta["batch_size"] == 4 and meta["recipe"] == "test"
    assert len(meta["loss_curve"]) == 3 and np.isfinite(meta["final_loss"])
    assert set(training_meta(1, 0, None, 0.0)) <= set(meta)


def test_a_missing_file_of_a_named_model_names_its_trainer(tmp_path):
    mine = tmp_path / "mine.pt"
    assert train_command(mine, "siamrpn") == f"`acvm train siamrpn --out {mine}`"
    assert train_command(mine, "iounet") == f"`acvm train atom --out {mine}`"
    with pytest.raises(FileNotFoundError, match=r"acvm train mdnet --out .*mine\.pt"):
        load_weights(mine, torch.nn.Linear(1, 1), "mdnet")


def test_the_manifest_covers_every_shipped_file():
    from acvm import weights
    entries = weights.manifest()
    shipped = {p.name for p in registry.WEIGHTS_DIR.glob("*.pt")}
    assert shipped <= set(entries), f"not in {weights.MANIFEST.name}: {shipped - set(entries)}"
    for name in shipped:
        assert weights.check_integrity(registry.WEIGHTS_DIR / name) == "ok"


def test_a_changed_shipped_file_is_refused_and_a_retrained_one_recorded(tmp_path, monkeypatch):
    from acvm import weights
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "MANIFEST", folder / "MANIFEST.json")
    model = torch.nn.Conv2d(3, 8, 3)
    path = save_weights(folder / "siamfc.pt", model, {"steps": 1})       # as `acvm train` writes it
    assert weights.manifest()["siamfc.pt"]["sha256"] == weights.sha256(path)
    assert weights.check_integrity(path) == "ok" and read_weights(path)["meta"] == {"steps": 1}
    # 64 bytes flipped inside a tensor's data: torch still loads the file, with other numbers
    data = bytearray(path.read_bytes())
    start = data.index(model.weight.detach().numpy().tobytes()[:16]) + 32
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    loaded = torch.load(path, weights_only=True)["state_dict"]["weight"]
    assert not torch.equal(loaded, model.weight.detach())
    with pytest.raises(ValueError, match=r"siamfc\.pt changed since it was recorded .*git checkout.*acvm train siamfc"):
        read_weights(path)
    weights.record(path)                         # `acvm weights --record`: accepted as it is
    assert torch.equal(read_weights(path)["state_dict"]["weight"], loaded)
    other = tmp_path / "elsewhere.pt"
    save_weights(other, model, {})
    assert weights.check_integrity(other) == "elsewhere" and "elsewhere.pt" not in weights.manifest()
    with pytest.raises(ValueError, match="only the shipped folder has a manifest"):
        weights.record(other)


def test_acvm_weights_lists_the_files(capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "siamfc.pt" in out and "iounet.pt" in out and " ok " in out


@pytest.mark.parametrize("name", ["siamfc", "siamrpn", "mdnet", "atom", "d3s", "stark"])
def test_a_file_of_another_network_names_the_file(name, tmp_path):
    # another network's weights under this tracker's name: the message names the file, not only a class
    other = "siamrpn" if name == "siamfc" else "siamfc"
    if not weights_file(other).is_file():
        pytest.skip(f"{weights_file(other).name} not trained here")
    wrong = tmp_path / f"wrong_{name}.pt"
    wrong.write_bytes(weights_file(other).read_bytes())
    with pytest.raises(ValueError, match=rf"wrong_{name}\.pt does not fit"):
        make_tracker(name, weights=str(wrong))
