"""spatialrec.integrations.nnunet: SDN networks built by nnU-Net's own get_network_from_plans from
a plans file the plans command converted (2D and 3D, PlainConvUNet and ResidualEncoderUNet, deep
supervision on and off), and the plans command on good and bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from ._nnunet import import_nnunet

pytestmark = pytest.mark.nnunet

REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _arch(resenc: bool, dims: int) -> dict:
    """A tiny architecture entry in nnU-Net v2's plans format (3 stages, bottleneck 4 per axis)."""
    kwargs = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * 3,
        "strides": [[1] * dims, [2] * dims, [2] * dims] if dims == 2 else [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if resenc:
        kwargs["n_blocks_per_stage"] = [1, 2, 2]
        name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    else:
        kwargs["n_conv_per_stage"] = [2, 2, 2]
        name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    return {"network_class_name": name, "arch_kwargs": kwargs, "_kw_requires_import": list(REQ_IMPORT)}


PATCH = {"2d": (16, 16), "3d_fullres": (8, 16, 16), "2d_resenc": (16, 16), "3d_resenc": (8, 16, 16)}


def _plans() -> dict:
    configurations = {}
    for name, patch in PATCH.items():
        configurations[name] = {
            "data_identifier": f"nnUNetPlans_{name}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": list(patch),
            "architecture": _arch("resenc" in name, len(patch)),
        }
    configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "configurations": configurations,
    }


@pytest.fixture(scope="module")
def nnunet() -> types.ModuleType:
    return import_nnunet()


@pytest.fixture
def plans_file(tmp_path: Path) -> Path:
    path = tmp_path / "nnUNetPlans.json"
    path.write_text(json.dumps(_plans(), indent=4))
    return path


def _build(arch: dict, deep_supervision: bool) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 2,
        allow_init=True, deep_supervision=deep_supervision,
    )  # fmt: skip


def _outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = net(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "no_ds"])
@pytest.mark.parametrize("configuration", list(PATCH))
def test_network_built_by_nnunet_from_converted_plans(
    nnunet: types.ModuleType, plans_file: Path, configuration: str, deep_supervision: bool, one_thread: None
) -> None:
    from spatialrec import ResidualSDN, sdn_modules

    target, plans = nnunet.convert_plans(plans_file, [configuration], sdn_state_size=4)
    assert json.loads(target.read_text()) == plans
    arch = plans["configurations"][configuration]["architecture"]
    dims = len(PATCH[configuration])
    expected_cls = nnunet.SDNResidualEncoderUNet if "resenc" in configuration else nnunet.SDNPlainConvUNet

    torch.manual_seed(0)
    plain = _build(_plans()["configurations"][configuration]["architecture"], deep_supervision)
    sdn = _build(arch, deep_supervision)
    assert type(sdn) is expected_cls
    layers = sdn_modules(sdn)
    # The default stages: the two deepest, one stride-1 convolution each.
    assert list(layers) == sdn.sdn_layer_names and len(layers) == 2
    assert all(name.startswith(("encoder.stages.1.", "encoder.stages.2.")) for name in layers)
    for layer in layers.values():
        assert type(layer) is ResidualSDN and layer.spatial_dims == dims and layer.state_size == 4
        assert all(s == 1 for s in layer.conv.stride)
        # nnU-Net's initialize (He init of every conv) ran, and the exact start was restored after it.
        assert torch.count_nonzero(layer.sdn.project_out.weight) == 0
        assert torch.count_nonzero(layer.conv.weight) > 0

    x = torch.randn(2, 1, *PATCH[configuration], generator=torch.Generator().manual_seed(0))
    # Output-preserving: with the plain network's weights the SDN network computes exactly what it does.
    nnunet.load_plain_weights(sdn, plain.state_dict())
    plain.eval()
    sdn.eval()
    with torch.no_grad():
        before, after = _outputs(plain, x), _outputs(sdn, x)
    assert len(after) == len(before) == (2 if deep_supervision else 1)
    for b, a in zip(before, after):
        assert a.shape == b.shape
        assert torch.equal(a, b), f"max abs difference {(a - b).abs().max().item()}"

    # A training step reduces the loss (nnU-Net's SGD settings, smaller learning rate).
    target = torch.randint(0, 2, (2, *PATCH[configuration]), generator=torch.Generator().manual_seed(1))
    sdn.train()
    opt = torch.optim.SGD(sdn.parameters(), lr=1e-2, momentum=0.9, nesterov=True)

    def loss_value() -> torch.Tensor:
        outs = _outputs(sdn, x)
        losses = [
            nn.functional.cross_entropy(o, nn.functional.interpolate(target[:, None].float(), size=o.shape[2:])[:, 0].long())
            for o in outs
        ]
        return sum(losses) / len(losses)

    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = loss_value()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0], losses
    for name, layer in layers.items():
        assert torch.count_nonzero(layer.sdn.project_out.weight) > 0, f"{name}: the SDN branch did not learn"


def test_deep_supervision_switch_as_the_trainer_sets_it(nnunet: types.ModuleType, plans_file: Path) -> None:
    # nnUNetTrainer.set_deep_supervision_enabled sets network.decoder.deep_supervision.
    _, plans = nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    net = _build(plans["configurations"]["2d"]["architecture"], True).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert len(net(x)) == 2
        net.decoder.deep_supervision = False
        assert net(x).shape == (1, 2, 16, 16)


def test_initialize_twice_keeps_exact_start(nnunet: types.ModuleType, plans_file: Path) -> None:
    _, plans = nnunet.convert_plans(plans_file, ["3d_resenc"], sdn_state_size=4, sdn_gate_init=0.75)
    net = _build(plans["configurations"]["3d_resenc"]["architecture"], False)
    net.apply(net.initialize)
    from spatialrec import sdn_modules

    for layer in sdn_modules(net).values():
        proj = layer.sdn.project_out
        assert torch.count_nonzero(proj.weight) == 0
        out = layer.out_channels
        assert torch.all(proj.bias[:out] == 0) and torch.allclose(proj.bias[out:], torch.full((out,), 1.0986123))


def test_options_reach_the_network(nnunet: types.ModuleType, plans_file: Path) -> None:
    _, plans = nnunet.convert_plans(
        plans_file, ["3d_fullres"], sdn_stages=[0, -1], sdn_state_size=3, sdn_directions=["in", "up"]
    )
    net = _build(plans["configurations"]["3d_fullres"]["architecture"], False)
    from spatialrec import sdn_modules

    layers = sdn_modules(net)
    assert list(layers) == ["encoder.stages.0.0.convs.1.conv", "encoder.stages.2.0.convs.1.conv"]
    assert all(m.directions == ("in", "up") and m.state_size == 3 for m in layers.values())


def test_load_plain_weights_refuses_mismatches(nnunet: types.ModuleType, plans_file: Path) -> None:
    _, plans = nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    sdn = _build(plans["configurations"]["2d"]["architecture"], False)
    other = _build(_plans()["configurations"]["2d_resenc"]["architecture"], False)
    with pytest.raises(RuntimeError, match="plain state_dict"):
        nnunet.load_plain_weights(sdn, other.state_dict())
    with pytest.raises(TypeError, match="SDNPlainConvUNet"):
        nnunet.load_plain_weights(other, other.state_dict())


def test_plain_checkpoint_through_nnunets_pretrained_weights(nnunet: types.ModuleType, plans_file: Path, tmp_path: Path) -> None:
    # docs/nnunet.md: a plain checkpoint converted with load_plain_weights and saved has the SDN
    # network's keys, so `nnUNetv2_train ... -pretrained_weights` (load_pretrained_weights) takes it.
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    _, plans = nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    torch.manual_seed(0)
    plain = _build(_plans()["configurations"]["2d"]["architecture"], True).eval()
    converted = _build(plans["configurations"]["2d"]["architecture"], True)
    nnunet.load_plain_weights(converted, plain.state_dict())
    torch.save({"network_weights": converted.state_dict()}, tmp_path / "sdn_from_plain.pth")
    fresh = _build(plans["configurations"]["2d"]["architecture"], True)
    load_pretrained_weights(fresh, str(tmp_path / "sdn_from_plain.pth"))
    fresh.eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        # nnU-Net leaves the segmentation layers out of a transfer: compare the features before them.
        assert torch.equal(fresh.encoder(x)[-1], plain.encoder(x)[-1])


# ----------------------------------------------------------------------------- plans command


def test_plans_command_writes_plans_and_prints_train_line(
    nnunet: types.ModuleType, plans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nnunet.main([str(plans_file), "--state-size", "8", "--stages", "-1"]) == 0
    out = capsys.readouterr().out
    target = plans_file.with_name("nnUNetPlans_SDN.json")
    assert f"wrote {target}" in out
    for conf in PATCH:
        assert f"nnUNetv2_train Dataset999_Tiny {conf} FOLD -p nnUNetPlans_SDN" in out
    new = json.loads(target.read_text())
    old = _plans()
    assert new["plans_name"] == "nnUNetPlans_SDN"
    for conf in PATCH:
        arch = new["configurations"][conf]["architecture"]
        assert arch["network_class_name"].startswith("spatialrec.integrations.nnunet.SDN")
        assert arch["arch_kwargs"]["sdn_stages"] == [-1] and arch["arch_kwargs"]["sdn_state_size"] == 8
        # The preprocessed data is reused: same data identifier, everything else unchanged.
        rest = {k: v for k, v in new["configurations"][conf].items() if k != "architecture"}
        assert rest == {k: v for k, v in old["configurations"][conf].items() if k != "architecture"}
    # The cascade inherits its parent's (converted) architecture.
    assert new["configurations"]["3d_cascade_fullres"] == old["configurations"]["3d_cascade_fullres"]
    assert json.loads(plans_file.read_text()) == old  # the input is untouched


def test_plans_command_only_the_named_configuration(nnunet: types.ModuleType, plans_file: Path) -> None:
    assert nnunet.main([str(plans_file), "-c", "2d", "-o", "MySDN"]) == 0
    new = json.loads(plans_file.with_name("MySDN.json").read_text())
    assert new["configurations"]["2d"]["architecture"]["network_class_name"].endswith("SDNPlainConvUNet")
    assert new["configurations"]["3d_fullres"] == _plans()["configurations"]["3d_fullres"]


def test_plans_file_is_written_atomically(nnunet: types.ModuleType, plans_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    target = plans_file.with_name("nnUNetPlans_SDN.json")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # A full disk at the flush: no plans file, not half of one, and no temporary file beside it.
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError) as info:
            nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert not target.exists()
    assert sorted(p.name for p in plans_file.parent.iterdir()) == [plans_file.name]
    nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    assert sorted(p.name for p in plans_file.parent.iterdir()) == sorted([plans_file.name, target.name])


def test_plans_command_as_module(plans_file: Path, tmp_path: Path) -> None:
    import_nnunet()
    # `python -m` runs the module as __main__; the plans must still name the importable class.
    result = subprocess.run(
        [sys.executable, "-m", "spatialrec.integrations.nnunet", str(plans_file), "-c", "3d_cascade_fullres"], check=False,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nnUNetv2_train Dataset999_Tiny 3d_cascade_fullres FOLD -p nnUNetPlans_SDN" in result.stdout
    new = json.loads(plans_file.with_name("nnUNetPlans_SDN.json").read_text())
    # A configuration that inherited its architecture gets an explicit SDN one; the parent stays plain.
    cascade = new["configurations"]["3d_cascade_fullres"]["architecture"]
    assert cascade["network_class_name"] == "spatialrec.integrations.nnunet.SDNPlainConvUNet"
    assert new["configurations"]["3d_fullres"] == _plans()["configurations"]["3d_fullres"]


def _bad_plans(kind: str, path: Path) -> Path:
    plans = _plans()
    if kind == "pickle":  # nnU-Net v1 plans
        path = path.with_suffix(".pkl")
        path.write_bytes(pickle.dumps({"plans_per_stage": {0: {}}, "num_stages": 1}))
        return path
    if kind == "not_json":
        path.write_text("{ this is not json")
        return path
    if kind == "no_configurations":
        plans = {"dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "plans_per_stage": {}}
    elif kind == "old_v2":
        for conf in plans["configurations"].values():
            arch = conf.pop("architecture", None)
            if arch:
                conf["UNet_class_name"] = "PlainConvUNet"
                conf["UNet_base_num_features"] = 32
    elif kind == "unknown_network":
        plans["configurations"]["2d"]["architecture"]["network_class_name"] = "my.own.Net"
    path.write_text(json.dumps(plans))
    return path


BAD_INPUT = {
    "missing_file": ([], "does not exist"),
    "pickle": ([], "not JSON"),
    "not_json": ([], "not JSON"),
    "no_configurations": ([], "not an nnU-Net v2 plans file"),
    "old_v2": ([], "no 'architecture' entry"),
    "unknown_network": (["-c", "2d"], "has no SDN variant"),
    "unknown_configuration": (["-c", "3d_lowres"], "unknown configuration"),
    "stage_out_of_range": (["--stages", "3"], "has 3 encoder stages"),
    "direction_not_in_2d": (["-c", "2d", "--directions", "in"], "'in' is not a direction"),
    "bad_state_size": (["--state-size", "0"], "state_size"),
    "bad_gate_init": (["--gate-init", "1.5"], "gate_init"),
    "same_identifier": (["-o", "nnUNetPlans"], "input's own"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_plans_command_bad_input(
    nnunet: types.ModuleType, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, message = BAD_INPUT[kind]
    path = tmp_path / "nnUNetPlans.json"
    if kind == "missing_file":
        path = tmp_path / "nope" / "nnUNetPlans.json"
    elif kind in ("pickle", "not_json", "no_configurations", "old_v2", "unknown_network"):
        path = _bad_plans(kind, path)
    else:
        path.write_text(json.dumps(_plans()))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert nnunet.main([str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert "spatialrec-nnunet: error:" in err and message in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "something was written"


def test_plans_command_refuses_to_overwrite(
    nnunet: types.ModuleType, plans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nnunet.main([str(plans_file), "-c", "2d"]) == 0
    target = plans_file.with_name("nnUNetPlans_SDN.json")
    first = target.read_text()
    assert nnunet.main([str(plans_file), "-c", "2d", "--state-size", "4"]) == 2
    assert "exists" in capsys.readouterr().err and target.read_text() == first
    assert nnunet.main([str(plans_file), "-c", "2d", "--state-size", "4", "--overwrite"]) == 0
    assert json.loads(target.read_text())["configurations"]["2d"]["architecture"]["arch_kwargs"]["sdn_state_size"] == 4


def test_plans_command_reconverts_sdn_plans(nnunet: types.ModuleType, plans_file: Path) -> None:
    # Converting converted plans replaces the options instead of nesting or failing.
    nnunet.convert_plans(plans_file, ["2d"], sdn_state_size=4)
    sdn_file = plans_file.with_name("nnUNetPlans_SDN.json")
    _, again = nnunet.convert_plans(sdn_file, ["2d"], plans_identifier="SDN2", sdn_stages=[-1])
    kwargs = again["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert kwargs["sdn_stages"] == [-1] and kwargs["sdn_state_size"] == 16


def test_plans_command_usage_error_exits_2(nnunet: types.ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        nnunet.main([])
    assert info.value.code == 2


def test_unknown_option_in_api(nnunet: types.ModuleType, plans_file: Path) -> None:
    with pytest.raises(nnunet.PlansError, match="unknown SDN option"):
        nnunet.convert_plans(plans_file, sdn_stage=[1])
    assert not plans_file.with_name("nnUNetPlans_SDN.json").exists()


# ----------------------------------------------------------------------------- without nnU-Net


def test_import_without_nnunet_names_the_extra() -> None:
    # Runs in every environment: nnU-Net's networks are hidden, the error must say what to install,
    # and `import spatialrec` must not import the integration at all.
    code = (
        "import sys; sys.modules['dynamic_network_architectures'] = None\n"
        "import spatialrec\n"
        "assert 'spatialrec.integrations.nnunet' not in sys.modules\n"
        "try:\n"
        "    import spatialrec.integrations.nnunet\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('imported without nnU-Net')\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(src)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pip install 'spatialrec[nnunet]'" in result.stdout
