"""Family / variant / prediction detection and config derivation on shape-only headers (no weights)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import MappingProxyType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.tiny_checkpoints import standard_meta_modules, standard_shapes  # noqa: E402

from sdlab.errors import UnsupportedModelError  # noqa: E402
from sdlab.models.derive import derive_configs, load_template  # noqa: E402
from sdlab.models.detect import detect_header, prediction_from_yaml  # noqa: E402
from sdlab.models.families import FAMILIES, UNET_PREFIX, VAE_PREFIX  # noqa: E402
from sdlab.models.files import CheckpointHeader, TensorInfo  # noqa: E402

FAMILY_NAMES = ("sd1", "sd2", "sdxl", "sdxl-refiner")


def header(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> CheckpointHeader:
    infos = tuple(TensorInfo(k, v, "float16") for k, v in shapes.items())
    return CheckpointHeader(Path("model.safetensors"), "safetensors", infos, MappingProxyType(metadata or {}))


@pytest.fixture(scope="module")
def shapes_by_family() -> dict[str, dict[str, tuple[int, ...]]]:
    return {f: standard_shapes(f) for f in FAMILY_NAMES}


# Published parameter counts of the original models: the bundled configs must describe them.
PUBLISHED = {
    "sd1": (859_520_964, 83_653_863, (123_060_480,)),
    "sd2": (865_910_724, 83_653_863, (340_387_840,)),
    "sdxl": (2_567_463_684, 83_653_863, (123_060_480, 694_659_840)),
}


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_bundled_configs_have_the_published_sizes(family: str) -> None:
    unet, vae, texts = standard_meta_modules(family)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), tuple(count(t) for t in texts)) == PUBLISHED[family]


def test_standard_file_layout_has_the_keys_diffusers_looks_for(shapes_by_family: dict) -> None:
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES as K

    assert K["v1"] in shapes_by_family["sd1"] and K["clip"] in shapes_by_family["sd1"]
    assert K["v2"] in shapes_by_family["sd2"] and K["open_clip"] in shapes_by_family["sd2"]
    assert shapes_by_family["sd2"][K["v2"]] == (320, 1024)
    assert K["xl_base"] in shapes_by_family["sdxl"] and K["open_clip_sdxl"] in shapes_by_family["sdxl"]
    assert K["clip_sdxl"] in shapes_by_family["sdxl"]
    assert K["xl_refiner"] in shapes_by_family["sdxl-refiner"]
    assert shapes_by_family["sd2"]["cond_stage_model.model.transformer.resblocks.23.ln_1.weight"] == (1024,)
    assert shapes_by_family["sdxl"]["conditioner.embedders.1.model.text_projection"] == (1280, 1280)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_standard_shapes_detect_and_reproduce_bundled_configs(family: str, shapes_by_family: dict) -> None:
    shapes = shapes_by_family[family]
    det = detect_header(header(shapes))
    assert (det.family, det.variant) == (family, "standard")
    configs = derive_configs(shapes, FAMILIES.get(family), UNET_PREFIX, VAE_PREFIX)
    assert configs.unet == load_template(family, "unet")
    assert configs.vae == load_template(family, "vae")
    specs = FAMILIES.get(family).text_encoders
    assert list(configs.text_encoders) == [load_template(family, s.name) for s in specs]


@pytest.mark.parametrize(("in_channels", "variant"), [(9, "inpainting"), (8, "instruct-pix2pix")])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_variants_by_input_channels(family: str, in_channels: int, variant: str, shapes_by_family: dict) -> None:
    shapes = dict(shapes_by_family[family])
    key = UNET_PREFIX + "input_blocks.0.0.weight"
    shapes[key] = (shapes[key][0], in_channels, 3, 3)
    assert detect_header(header(shapes)).variant == variant
    assert derive_configs(shapes, FAMILIES.get(family), UNET_PREFIX, VAE_PREFIX).unet["in_channels"] == in_channels


def test_odd_input_channels_are_refused(shapes_by_family: dict) -> None:
    shapes = dict(shapes_by_family["sd1"])
    shapes[UNET_PREFIX + "input_blocks.0.0.weight"] = (320, 7, 3, 3)
    with pytest.raises(UnsupportedModelError, match="7 channels"):
        detect_header(header(shapes))


def test_sd2_prediction_evidence(shapes_by_family: dict) -> None:
    shapes = shapes_by_family["sd2"]
    undecided = detect_header(header(shapes))
    assert undecided.prediction_type is None and "functional test" in undecided.evidence[-1]
    cases = [
        ({"modelspec.prediction_type": "v"}, None, None, "v_prediction"),
        ({"modelspec.prediction_type": "epsilon"}, None, None, "epsilon"),
        ({"ss_v_parameterization": "True"}, None, None, "v_prediction"),
        ({"ss_v_parameterization": "False"}, None, None, "epsilon"),
        ({}, {"v_pred": ()}, None, "v_prediction"),
        ({}, None, 'model:\n  params:\n    parameterization: "v"\n', "v_prediction"),
        ({}, None, "model:\n  params:\n    linear_start: 0.00085\n", "epsilon"),
    ]
    for metadata, extra, yaml, expected in cases:
        det = detect_header(header({**shapes, **(extra or {})}, metadata), yaml)
        assert det.prediction_type == expected, (metadata, extra, yaml)
        assert det.evidence[-1]


def test_sd2_inpainting_is_eps_without_a_test(shapes_by_family: dict) -> None:
    shapes = dict(shapes_by_family["sd2"])
    shapes[UNET_PREFIX + "input_blocks.0.0.weight"] = (320, 9, 3, 3)
    assert detect_header(header(shapes)).prediction_type == "epsilon"


def test_yaml_is_read_only_for_parameterization() -> None:
    assert prediction_from_yaml("parameterization: 'v'  # comment")[0] == "v_prediction"
    assert prediction_from_yaml("!!python/object:os.system ['rm -rf /']\n")[0] == "epsilon"


@pytest.mark.parametrize(
    ("keys", "kind"),
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (["lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a"], "LyCORIS"),
        (["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"], "LoRA"),
        (["encoder.conv_in.weight", "decoder.conv_out.weight"], "VAE"),
        (["first_stage_model.encoder.conv_in.weight"], "VAE"),
        (["string_to_param.*"], "textual inversion"),
        (["clip_l", "clip_g"], "textual inversion"),
        (["params_ema.conv_first.weight", "params_ema.body.0.rdb1.conv1.weight"], "upscaler"),
        (["control_model.time_embed.0.weight"], "ControlNet"),
    ],
)
def test_other_file_kinds_are_named(keys: list[str], kind: str) -> None:
    with pytest.raises(UnsupportedModelError, match=kind):
        detect_header(header({k: (4, 4) for k in keys}))


def test_unknown_file_lists_facts_and_families_tried() -> None:
    shapes = {f"net.blocks.{i}.weight": (8, 8) for i in range(5)} | {"head.bias": (8,)}
    with pytest.raises(UnsupportedModelError) as info:
        detect_header(header(shapes))
    message = str(info.value)
    assert "net.blocks (5)" in message and "head.bias (1)" in message
    assert all(name in message for name in FAMILY_NAMES)
    assert "[8, 8]" in message


def test_empty_and_truncated_checkpoints(shapes_by_family: dict) -> None:
    with pytest.raises(UnsupportedModelError, match="no tensors"):
        detect_header(header({}))
    shapes = {k: v for k, v in shapes_by_family["sd1"].items() if not k.startswith(UNET_PREFIX + "out.")}
    with pytest.raises(UnsupportedModelError, match="truncated"):
        detect_header(header(shapes))
