"""Malformed bundles and checkpoints: a BundleError (or ConvertError) naming the file and key, and
exit status 2 from every command that reads them; never a traceback, a hang or a memory blow-up.

Before these checks, a manifest that was a JSON list or null raised AttributeError, one nested
200000 levels deep RecursionError, `weights.dit` as a string TypeError, a non-UTF-8 manifest
UnicodeDecodeError, and a manifest of the wrong section types a BundleError naming no key. An ONNX
entry whose file 'files' did not list loaded, then raised KeyError in the onnx backend. A symlink to
a file outside the bundle was followed and used when its hash matched, and one to /proc/self/mem
gave "[Errno 5] Input/output error" naming no file. Empty, garbage and legacy-format checkpoints
with pickled code raised EOFError / UnpicklingError / KeyError from the retry without mmap.
docs/bad-files.md lists each case.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from official_run import backbones, write_official_run

from lightwam_ros import cli
from lightwam_ros.bundle import convert as convert_mod
from lightwam_ros.bundle import format as format_mod
from lightwam_ros.bundle import safetensors_io
from lightwam_ros.bundle.convert import ConvertError, torch_load_tensors
from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST, Bundle
from lightwam_ros.bundle.safetensors_io import load_safetensors, read_safetensors_header

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


def _edit(bundle: Path, mutate: Callable[[dict], object]) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    mutate(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _refused(bundle: Path, *fragments: str, verify: bool = True) -> str:
    t0 = time.monotonic()
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle, verify=verify)
    assert time.monotonic() - t0 < 30  # a bound on work (the deep cases are linear in the file), not a speed
    msg = str(err.value)
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# -- manifest.json: shape and types ----------------------------------------------------------------

DEEP = 200_000
WHOLE_FILE = {  # manifest.json text -> what the error must name besides the file
    "list": ("[1, 2]", "JSON object"),
    "null": ("null", "JSON object"),
    "deep_list": ("[" * DEEP + "]" * DEEP, "nested"),
    "deep_object": ('{"a":' * DEEP + "1" + "}" * DEEP, "nested"),
    "int_over_digit_limit": ('{"format": ' + "9" * 5000 + "}", "invalid JSON"),
    "truncated": ('{"format": "lightwam-bundle", "mod', "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(WHOLE_FILE))
def test_a_manifest_that_is_not_a_json_object_is_named(bundle: Path, case: str) -> None:
    text, fragment = WHOLE_FILE[case]
    (bundle / MANIFEST).write_text(text)
    _refused(bundle, str(bundle / MANIFEST), fragment, verify=False)


SECTIONS = {  # mutation -> the key the error must name
    "weights_dit_string": (lambda m: m["weights"].update(dit="dit.safetensors"), "weights.dit"),
    "weights_list": (lambda m: m.update(weights=["dit.safetensors"]), "weights"),
    "weights_part_missing": (lambda m: m["weights"].pop("expert"), "weights"),
    "weights_file_int": (lambda m: m["weights"]["dit"].update(file=5), "weights.dit.file"),
    "files_list": (lambda m: m.update(files=["dit.safetensors"]), "files"),
    "files_string": (lambda m: m.update(files="dit.safetensors"), "files"),
    "files_digest_int": (lambda m: m["files"].update({"dit.safetensors": 5}), "files"),
    "files_path": (lambda m: m["files"].update({"../outside.safetensors": "0" * 64}), "files"),
    "text_list": (lambda m: m.update(text=["template"]), "text"),
    "text_template_int": (lambda m: m["text"].update(template=5), "text.template"),
    "text_contexts_file_int": (lambda m: m["text"].update(contexts_file=5), "text.contexts_file"),
    "text_instructions_list": (lambda m: m["text"].update(instructions=["pick"]), "text.instructions"),
    "text_instruction_key_int": (lambda m: m["text"]["instructions"].update(pick=5), "text.instructions"),
    "model_list": (lambda m: m.update(model=[64]), "model"),
    "model_null": (lambda m: m.update(model=None), "model"),
    "embodiment_list": (lambda m: m.update(embodiment=[1]), "embodiment"),
    "embodiment_cells_list": (lambda m: m["embodiment"]["layout"].update(cells=[[1]]), "embodiment"),
    "embodiment_trained_steps_inf": (lambda m: m["embodiment"].update(trained_steps=1e400), "embodiment"),
    "lora_merged_string": (lambda m: m.update(lora_merged="no"), "lora_merged"),
    "onnx_list": (lambda m: m.update(onnx=["policy_float32.onnx"]), "onnx"),
    "onnx_entry_string": (lambda m: m.update(onnx={"float32": "policy_float32.onnx"}), "onnx.float32"),
    "onnx_steps_string": (lambda m: m.update(onnx={"float32": {"file": "dit.safetensors", "steps": "32"}}),
                          "onnx.float32.steps"),
    "source_nested_40": (lambda m: m.update(source=json.loads("[" * 40 + "]" * 40)), "nested"),
    "model_patch_size_float": (lambda m: m["model"].update(patch_size=[1, 2, -1e308]), "model.patch_size"),
    "model_lora_alpha_object": (lambda m: m["model"].update(lora_alpha={}), "model.lora_alpha"),
    "model_eps_string": (lambda m: m["model"].update(eps="x"), "model.eps"),
    "model_expert_list": (lambda m: m["model"].update(expert=[48]), "model.expert"),
    "normalization_std_string": (lambda m: m["embodiment"]["normalization"]["action"]["std"].__setitem__(1, "x"),
                                 "embodiment.normalization"),
}


@pytest.mark.parametrize("case", sorted(SECTIONS))
def test_a_manifest_section_of_the_wrong_type_is_named(bundle: Path, case: str) -> None:
    mutate, key = SECTIONS[case]
    _edit(bundle, mutate)
    _refused(bundle, str(bundle / MANIFEST), key, verify=False)


def test_a_model_the_network_refuses_is_named_on_verify(bundle: Path) -> None:
    """A temporal patch of 2 passes the config's own checks; building the network refuses it.
    Before: that ValueError came out of Bundle.load as it was, naming no file."""
    _edit(bundle, lambda m: m["model"].update(patch_size=[2, 2, 2]))
    _refused(bundle, str(bundle / MANIFEST), "'model'", "temporal patch")


def test_an_error_quotes_a_huge_value_only_in_part(bundle: Path) -> None:
    """Before: the whole 60000-entry list was quoted, a 400 KB error line."""
    _edit(bundle, lambda m: m["model"]["vae"].update(z_dim=list(range(60000))))
    assert len(_refused(bundle, str(bundle / MANIFEST), "model.vae.z_dim", verify=False)) < 2000


def test_an_onnx_entry_whose_file_files_does_not_list_is_named(bundle: Path) -> None:
    """Before: loaded, and the onnx backend then raised KeyError looking up the file's sha256."""
    _edit(bundle, lambda m: m.update(onnx={"float32": {"file": "policy_float32.onnx", "external_data": None,
                                                       "steps": 32}}))
    _refused(bundle, str(bundle / MANIFEST), "onnx.float32", "policy_float32.onnx", verify=False)
    _edit(bundle, lambda m: m.update(onnx={"float32": {"file": "dit.safetensors", "external_data": "w.data",
                                                       "steps": 32}}))
    _refused(bundle, "onnx.float32.external_data", "w.data", verify=False)


def test_a_non_utf8_manifest_is_named(bundle: Path) -> None:
    raw = (bundle / MANIFEST).read_bytes().replace(b'"format"', b'"f\xe9rmat"', 1)
    (bundle / MANIFEST).write_bytes(raw)
    _refused(bundle, str(bundle / MANIFEST), "UTF-8", verify=False)


def test_an_oversized_manifest_is_refused_before_parsing(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is checked on the bytes read, so a huge file costs no more than the bound to refuse."""
    monkeypatch.setattr(format_mod, "MAX_MANIFEST_BYTES", 1 << 20)
    _edit(bundle, lambda m: m.update(source={"note": "x" * (2 << 20)}))
    _refused(bundle, str(bundle / MANIFEST), "MiB", verify=False)


def test_too_many_files_entries_are_refused_naming_the_key(bundle: Path) -> None:
    _edit(bundle, lambda m: m["files"].update({f"extra_{i}.bin": "0" * 64 for i in range(format_mod.MAX_FILES)}))
    _refused(bundle, str(bundle / MANIFEST), "'files'", str(format_mod.MAX_FILES), verify=False)


def test_too_many_instructions_are_refused_naming_the_key(bundle: Path) -> None:
    _edit(bundle, lambda m: m["text"].update(
        instructions={f"instruction {i}": "0" * 64 for i in range(format_mod.MAX_INSTRUCTIONS + 1)}))
    _refused(bundle, str(bundle / MANIFEST), "text.instructions", str(format_mod.MAX_INSTRUCTIONS), verify=False)


# -- files of the bundle: where they are and what they are -----------------------------------------


def test_a_symlink_to_a_file_outside_the_bundle_is_refused_even_when_its_hash_matches(bundle: Path,
                                                                                     tmp_path: Path) -> None:
    """Before: followed, and the bundle loaded with weights from wherever the link pointed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(bundle / "dit.safetensors", elsewhere / "dit.safetensors")
    (bundle / "dit.safetensors").symlink_to(elsewhere / "dit.safetensors")
    for verify in (True, False):
        _refused(bundle, str(bundle / "dit.safetensors"), "outside the bundle", verify=verify)


def test_a_symlink_to_proc_self_mem_is_named(bundle: Path) -> None:
    """Before: OSError "[Errno 5] Input/output error" while hashing, naming no file."""
    (bundle / "dit.safetensors").unlink()
    (bundle / "dit.safetensors").symlink_to("/proc/self/mem")
    _refused(bundle, str(bundle / "dit.safetensors"))


def test_a_symlinked_manifest_outside_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    shutil.move(bundle / MANIFEST, tmp_path / "manifest_elsewhere.json")
    (bundle / MANIFEST).symlink_to(tmp_path / "manifest_elsewhere.json")
    _refused(bundle, str(bundle / MANIFEST), "outside the bundle", verify=False)


def test_a_symlink_inside_the_bundle_and_a_symlinked_bundle_directory_still_load(bundle: Path,
                                                                                 tmp_path: Path) -> None:
    """What users do (models/README.md): symlink the whole bundle; and a link between its own files."""
    shutil.move(bundle / "expert.safetensors", bundle / "expert_v1.safetensors")
    (bundle / "expert.safetensors").symlink_to("expert_v1.safetensors")
    link = tmp_path / "linked_bundle"
    link.symlink_to(bundle)
    assert set(Bundle.load(link).load_part("expert")) == set(Bundle.load(bundle).load_part("expert"))


def test_an_unreadable_bundle_file_is_named(bundle: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    (bundle / "expert.safetensors").chmod(0)
    _refused(bundle, str(bundle / "expert.safetensors"))


def test_a_truncated_weights_file_is_named_when_read_without_verify(bundle: Path) -> None:
    """Before: safetensors' own error type from load_part, naming no file."""
    path = bundle / "expert.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    b = Bundle.load(bundle, verify=False)
    with pytest.raises(BundleError, match=str(path)):
        b.load_part("expert")


def _header_file(path: Path, header: bytes) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_a_safetensors_header_with_too_many_tensors_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Refused on the key count, before a shape is read per key (before: read them all)."""
    n = safetensors_io.MAX_TENSORS + 1
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)})
    path = tmp_path / "many.safetensors"
    _header_file(path, header.encode())
    for read in (read_safetensors_header, load_safetensors):
        with pytest.raises(BundleError, match=f"{path}.*{n} tensors"):
            read(path)


def test_a_safetensors_header_over_the_size_bound_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(safetensors_io, "MAX_HEADER_BYTES", 1 << 20)
    path = tmp_path / "big_header.safetensors"
    _header_file(path, b'{"__metadata__": {"note": "' + b"x" * (2 << 20) + b'"}}')
    for read in (read_safetensors_header, load_safetensors):
        with pytest.raises(BundleError, match=f"{path}.*header"):
            read(path)


# -- checkpoints for `lightwam convert` ------------------------------------------------------------


def _legacy_pickled_code(path: Path) -> None:
    torch.save({"mot": {}, "hook": os.getcwd}, path, _use_new_zipfile_serialization=False)


CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "text": lambda p: p.write_bytes(b"hello world\n" * 10),
    "legacy_truncated": lambda p: p.write_bytes(_legacy_bytes(p)[:300]),
    "legacy_pickled_code": _legacy_pickled_code,
    "zip_pickled_code": lambda p: torch.save({"hook": os.getcwd}, p),
    "zip_truncated": lambda p: (torch.save({"mot": {"a": torch.zeros(4)}}, p), p.write_bytes(p.read_bytes()[:200])),
}


def _legacy_bytes(path: Path) -> bytes:
    torch.save({"mot": {"a": torch.zeros(64)}}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_a_malformed_checkpoint_is_one_convert_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path = tmp_path / "step_1.pt"
    CHECKPOINTS[case](path)
    with pytest.raises(ConvertError) as err:
        torch_load_tensors(path, "--ckpt")
    msg = str(err.value)
    assert f"--ckpt {path}" in msg and "\n" not in msg, msg
    assert "weights_only` set to `False`" not in msg  # torch's advice to unpickle code is not repeated


def test_a_legacy_format_checkpoint_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"mot": {"a": torch.arange(4.0)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(torch_load_tensors(path, "--ckpt")["mot"]["a"], torch.arange(4.0))


@pytest.fixture(scope="module")
def official(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_official_run(tiny_bundle, tmp_path_factory.mktemp("official"))


def _convert_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["convert", "--ckpt", str(paths["ckpt"]), "--config", str(paths["config"]), "--stats",
            str(paths["stats"]), "--vae", str(paths["vae"]), "--out", str(out)]


@pytest.mark.parametrize("case", ["empty", "garbage", "legacy_pickled_code"])
def test_convert_cli_on_a_malformed_checkpoint_exits_2_naming_it(official, tiny_bundle: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, capsys,
                                                                 case: str) -> None:
    monkeypatch.setitem(convert_mod.BACKBONES, "wan2_1_t2v", backbones(tiny_bundle)["wan2_1_t2v"])
    paths = dict(official, ckpt=tmp_path / "step_2.pt")
    CHECKPOINTS[case](paths["ckpt"])
    assert cli.main(_convert_argv(paths, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightwam convert: error: --ckpt") and str(paths["ckpt"]) in err, err
    assert "\n" not in err and not (tmp_path / "out" / MANIFEST).exists()


TRAINING_CONFIGS = {
    "alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")) + "model: *i\ndata: {}\n",
    "deep": "model: " + "[" * 5000 + "]" * 5000 + "\ndata: {}\n",
    "not_utf8": "model: {}\ndata: {name: \"caf\xe9\"}\n",
}


@pytest.mark.parametrize("case", sorted(TRAINING_CONFIGS))
def test_convert_cli_on_a_malformed_training_config_exits_2_naming_it(official, tiny_bundle: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, capsys,
                                                                      case: str) -> None:
    """config.yaml is read within bounds: a 5000-deep nesting (RecursionError before) and a non-UTF-8
    file (UnicodeDecodeError before) each end in one line naming the file; an alias bomb of 10^9
    nodes too (before, PyYAML shared the aliased lists and the converter refused the shape, but
    anything walking the document would have expanded it)."""
    monkeypatch.setitem(convert_mod.BACKBONES, "wan2_1_t2v", backbones(tiny_bundle)["wan2_1_t2v"])
    paths = dict(official, config=tmp_path / "config.yaml")
    text = TRAINING_CONFIGS[case]
    paths["config"].write_bytes(text.encode("latin-1") if case == "not_utf8" else text.encode())
    t0 = time.monotonic()
    assert cli.main(_convert_argv(paths, tmp_path / "out")) == 2
    assert time.monotonic() - t0 < 60  # a bound on work: the bomb expands to 10^9 nodes
    err = capsys.readouterr().err.strip()
    assert str(paths["config"]) in err and "\n" not in err and len(err) < 2000, err


def test_convert_cli_converts_the_official_run_it_is_given(official, tiny_bundle: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference for the cases above: the same inputs with a sound checkpoint convert."""
    monkeypatch.setitem(convert_mod.BACKBONES, "wan2_1_t2v", backbones(tiny_bundle)["wan2_1_t2v"])
    assert cli.main(_convert_argv(official, tmp_path / "out")) == 0
    assert Bundle.load(tmp_path / "out").model_config == Bundle.load(tiny_bundle).model_config


# -- every command that reads a bundle: one line, status 2 --------------------------------------------


def _commands(bundle: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "predict": ["predict", "--bundle", str(bundle), "--image", "cam_high=x.png", "--state", "0",
                    "--instruction", "pick up the red block", "--out", str(tmp_path / "a.npy"), "--device", "cpu"],
        "bench": ["bench", "--bundle", str(bundle), "--device", "cpu", "--runs", "1", "--warmup", "0"],
        "export-onnx": ["export-onnx", "--bundle", str(bundle), "--no-verify"],
        "encode-text": ["encode-text", "--bundle", str(bundle), "--official-cache", str(DATA / "official_text_cache"),
                        "--instruction", "pick up the red block"],
    }


BROKEN = {
    "manifest_list": lambda b: (b / MANIFEST).write_text("[]"),
    "weights_dit_string": lambda b: _edit(b, lambda m: m["weights"].update(dit="dit.safetensors")),
    "proc_self_mem": lambda b: ((b / "dit.safetensors").unlink(), (b / "dit.safetensors").symlink_to("/proc/self/mem")),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
@pytest.mark.parametrize("command", ["predict", "bench", "export-onnx", "encode-text"])
def test_a_command_on_a_broken_bundle_exits_2_with_one_line(bundle: Path, tmp_path: Path, capsys, command: str,
                                                            broken: str) -> None:
    BROKEN[broken](bundle)
    named = bundle / ("dit.safetensors" if broken == "proc_self_mem" else MANIFEST)
    assert cli.main(_commands(bundle, tmp_path)[command]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lightwam {command}: error: ") and str(named) in err and "\n" not in err, err


# Offline replay decodes messages with rclpy; the conftest's static check cannot see that through cli.main.
@pytest.mark.ros
def test_replay_on_a_broken_bundle_exits_2_naming_the_manifest(bundle: Path, tmp_path: Path, capsys) -> None:
    from lightwam_ros.demo.synthetic import SyntheticBagSpec, write_synthetic_bag

    bag = write_synthetic_bag(SyntheticBagSpec(height=60, width=80, rate_hz=10.0, seconds=0.5), tmp_path / "bag")
    BROKEN["manifest_list"](bundle)
    rc = cli.main(["replay", "--bag", str(bag), "--profile", "demo", "--bundle", str(bundle),
                   "--out", str(tmp_path / "out"), "--no-plot"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("lightwam replay: error: ") and str(bundle / MANIFEST) in err, err
    assert "\n" not in err


@pytest.mark.ros
def test_demo_on_a_broken_bundle_exits_2_naming_the_manifest(bundle: Path, tmp_path: Path, capsys) -> None:
    """Before: the ReplayError carrying the BundleError ended `lightwam demo` in a traceback."""
    BROKEN["manifest_list"](bundle)
    rc = cli.main(["demo", "--bundle", str(bundle), "--mode", "offline", "--seconds", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("lightwam demo: error: ") and str(bundle / MANIFEST) in err, err
    assert "\n" not in err
