"""diffcore.networks: the layout equals diffusers' UNet2DModel state dict, the torch and flax nnx
networks compute what diffusers computes, diffusers folders round-trip bit for bit, and bad input
fails with messages that name the problem.

Everything runs on CPU in float32 with small configurations (the CIFAR-10 one is built once, for its
layout and one batch-1 forward pass on torch).
"""

from __future__ import annotations

import functools
import json
import logging
import warnings

import numpy as np
import pytest

from diffcore.networks import (
    MLPConfig,
    SafetensorsError,
    UNetConfig,
    WeightsError,
    check_weights,
    config_to_diffusers,
    layout,
    load_diffusers,
    parameter_count,
    read_safetensors,
    sinusoidal_embedding,
    save_diffusers,
    write_safetensors,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import torch.nn.functional as F  # noqa: E402

from diffcore_torch import networks as tnet  # noqa: E402

TOL = 1e-5

SMALL = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    norm_num_groups=8,
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)

# Named small configurations covering every option the layout depends on.
CONFIGS = {
    "class_cond_learned_var": UNetConfig(**SMALL, attention_head_dim=None, num_class_embeds=5, out_channels=6,
                                         flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6),
    "multihead_scale_shift_pad0": UNetConfig(
        **{**SMALL, "layers_per_block": 2, "down_block_types": ("AttnDownBlock2D", "DownBlock2D"),
           "up_block_types": ("UpBlock2D", "AttnUpBlock2D")},
        attention_head_dim=8, resnet_time_scale_shift="scale_shift", downsample_padding=0,
        mid_block_scale_factor=2**0.5, dropout=0.1,
    ),
    "pad1_three_levels": UNetConfig(**{**SMALL, "block_out_channels": (16, 32, 32),
                                       "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                                       "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")},
                                    downsample_padding=1, attention_head_dim=16),
    "fourier_no_mid_attention": UNetConfig(**{**SMALL, "block_out_channels": (16, 32)}, time_embedding_type="fourier",
                                           add_attention=False, center_input_sample=True),
}


# loops of small torch ops: one thread (two are far slower when another process holds a core)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@functools.lru_cache(maxsize=None)
def diffusers_unet(config: UNetConfig, seed: int = 0):
    """A diffusers UNet2DModel for ``config`` with every parameter randomised (norm scales too,
    so a mis-mapped GroupNorm weight shows). Cached: tests only read it."""
    kwargs = {k: v for k, v in config_to_diffusers(config).items() if not k.startswith("_")}
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = diffusers.UNet2DModel(**kwargs).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def state_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def inputs(config: UNetConfig, batch: int = 2, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, config.in_channels, size, size)).astype(np.float32)
    # positive times: the Fourier embedding takes log t
    t = rng.uniform(1.0, 999.0, size=batch).astype(np.float32)
    cond = None
    if config.num_class_embeds is not None:
        cond = np.arange(batch) % config.num_class_embeds
    return x, t, cond


def diffusers_forward(model, x, t, cond):
    with torch.no_grad():
        c = None if cond is None else torch.as_tensor(cond)
        return model(torch.as_tensor(x), torch.as_tensor(t), class_labels=c).sample.numpy()


def torch_forward(net, x, t, cond):
    with torch.no_grad():
        c = None if cond is None else torch.as_tensor(cond)
        return net(torch.as_tensor(x), torch.as_tensor(t), c).numpy()


def same_layout(config: UNetConfig, model) -> None:
    got = [(e.name, e.shape) for e in layout(config)]
    want = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == want
    assert parameter_count(config) == sum(v.numel() for v in model.state_dict().values())


# --------------------------------------------------------------------------------------------
# The DDPM CIFAR-10 network
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar10():
    config = UNetConfig.ddpm_cifar10()
    return config, diffusers_unet(config)


def test_cifar10_layout_count_and_forward(cifar10):
    config, ref = cifar10
    same_layout(config, ref)
    assert parameter_count(config) == 35_746_307
    assert len(layout(config)) == 328
    assert list(ref.buffers()) == []
    net = tnet.UNet2D(config)
    net.load_state_dict(ref.state_dict(), strict=True)
    x, t, _ = inputs(config, batch=1, size=32)
    np.testing.assert_allclose(torch_forward(net, x, t, None), diffusers_forward(ref, x, t, None), rtol=0, atol=TOL)


# --------------------------------------------------------------------------------------------
# Small configurations: layout and outputs against diffusers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def small(request):
    config = CONFIGS[request.param]
    ref = diffusers_unet(config)
    return config, ref


def test_small_layout_and_torch_outputs(small):
    config, ref = small
    same_layout(config, ref)
    net = tnet.UNet2D(config)
    net.load_state_dict(ref.state_dict(), strict=True)
    assert list(net.state_dict()) == list(ref.state_dict())
    x, t, cond = inputs(config)
    np.testing.assert_allclose(torch_forward(net, x, t, cond), diffusers_forward(ref, x, t, cond), rtol=0, atol=TOL)


def test_numpy_weight_helpers_round_trip(small):
    config, ref = small
    net = tnet.UNet2D(config)
    tnet.load_numpy_weights(net, state_numpy(ref))
    w = tnet.to_numpy_weights(net)
    assert list(w) == [e.name for e in layout(config)]
    for k, v in state_numpy(ref).items():
        assert np.array_equal(w[k], v)


def test_null_class_is_the_default_condition():
    config = CONFIGS["class_cond_learned_var"]
    net = tnet.UNet2D(config)
    x, t, _ = inputs(config)
    null = np.full(2, config.num_class_embeds - 1)
    assert config.null_class == config.num_class_embeds - 1
    np.testing.assert_array_equal(torch_forward(net, x, t, None), torch_forward(net, x, t, null))


def test_dropout_only_with_a_key_and_keyed():
    """No dropout without a key, whatever train() says; with one, resnet i's mask for example b is
    uniform(fold_in(fold_in(key, i), ids[b])) >= rate, scaled by 1 / (1 - rate)."""
    from diffcore_torch import TorchBackend

    bk = TorchBackend()
    config = CONFIGS["multihead_scale_shift_pad0"]
    assert config.dropout > 0
    net = tnet.UNet2D(config)
    x, t, _ = inputs(config)
    x, t = torch.as_tensor(x), torch.as_tensor(t)
    plain = torch_forward(net, x, t, None)
    net.train()
    assert np.array_equal(torch_forward(net, x, t, None), plain)
    drops = [m for m in net.modules() if isinstance(m, tnet.Dropout)]
    assert [m.index for m in drops] == list(range(len(drops)))
    assert len(drops) == sum(len(b.resnets) for b in [*net.down_blocks, *net.up_blocks, net.mid_block])
    key = bk.key(3)
    with torch.no_grad():
        a = net(x, t, dropout_key=key)
        assert torch.equal(a, net(x, t, dropout_key=key, sample_ids=torch.arange(2)))  # default ids 0..B-1
        assert not np.array_equal(a.numpy(), plain)
        assert not torch.equal(a, net(x, t, dropout_key=bk.key(4)))
        # example b depends on its id only: reversing the batch and the ids reverses the output
        rev = net(x.flip(0), t.flip(0), dropout_key=key, sample_ids=[1, 0])
        np.testing.assert_allclose(rev.flip(0).numpy(), a.numpy(), rtol=1e-5, atol=1e-5)
        # the mask of layer i: captured at the module and checked against the backend's draw
        seen = {}
        hook = drops[2].register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0], out=out))
        net(x, t, dropout_key=key, sample_ids=[5, 9])
        hook.remove()
        u = bk.uniform(bk.fold_in(key, 2), seen["inp"].shape, torch.float32, sample_ids=[5, 9])
        want = seen["inp"] * ((u >= config.dropout).float() * (1 / (1 - config.dropout)))
        assert torch.equal(seen["out"], want)
    with pytest.raises(ValueError, match="sample_ids has 3 entries"):
        net(x, t, dropout_key=key, sample_ids=[0, 1, 2])
    with pytest.raises(TypeError, match="key must come from"):
        net(x, t, dropout_key=3)


def test_mlp_dropout_is_keyed_per_layer():
    from diffcore_torch import TorchBackend

    bk = TorchBackend()
    net = tnet.MLP(MLPConfig(hidden_dim=16, num_layers=2, dropout=0.5))
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with torch.no_grad():
        plain = net(x, t)
        net.train()
        assert torch.equal(net(x, t), plain)
        key = bk.key(1)
        a = net(x, t, dropout_key=key, sample_ids=[0, 1, 2, 3])
        assert torch.equal(a, net(x, t, dropout_key=key)) and not torch.equal(a, plain)
        # by hand: layer i's mask from fold_in(key, i)
        h = F.silu(net.input(x) + net.time_embedding(
            sinusoidal_embedding(t, net.config.time_embed_dim, flip_sin_to_cos=net.config.flip_sin_to_cos, freq_shift=net.config.freq_shift)))
        for i, layer in enumerate(net.layers):
            z = F.silu(layer(h))
            h = h + z * (bk.uniform(bk.fold_in(key, i), z.shape, torch.float32, sample_ids=range(4)) >= 0.5) / 0.5
        np.testing.assert_allclose(net.output(h).numpy(), a.numpy(), rtol=1e-6, atol=1e-6)
    no_drop = tnet.MLP(MLPConfig(hidden_dim=16, num_layers=2))
    with torch.no_grad():
        assert torch.equal(no_drop(x, t, dropout_key=key), no_drop(x, t))


def test_config_json_round_trip(tmp_path):
    for config in [*CONFIGS.values(), UNetConfig.ddpm_cifar10(), MLPConfig(num_class_embeds=3)]:
        assert type(config).from_json(config.to_json()) == config
    path = tmp_path / "c.json"
    UNetConfig.ddpm_cifar10().to_json(str(path))
    assert UNetConfig.from_json(str(path)) == UNetConfig.ddpm_cifar10()
    with pytest.raises(ValueError, match="unknown UNetConfig key.*'bogus'"):
        UNetConfig.from_dict({"bogus": 1})


# --------------------------------------------------------------------------------------------
# diffusers folders in and out
# --------------------------------------------------------------------------------------------


def _from_pretrained(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = diffusers.UNet2DModel.from_pretrained(
            str(path), output_loading_info=True, low_cpu_mem_usage=False  # accelerate is not installed
        )
    return model, info


def test_export_loads_in_diffusers_bit_exact(tmp_path, small):
    config, ref = small
    weights = state_numpy(ref)
    save_diffusers(tmp_path / "out", config, weights)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        model, info = _from_pretrained(tmp_path / "out")
    finally:
        logger.removeHandler(handler)
    assert all(not info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    back = state_numpy(model)
    assert list(back) == list(weights)
    for k in weights:
        assert back[k].tobytes() == weights[k].tobytes(), k


def test_import_then_export_is_bit_exact(tmp_path, small):
    config, ref = small
    ref.save_pretrained(str(tmp_path / "d"))
    cfg, weights = load_diffusers(tmp_path / "d")
    assert cfg == config
    save_diffusers(tmp_path / "e", cfg, weights)
    a, _ = read_safetensors(tmp_path / "d" / "diffusion_pytorch_model.safetensors")
    b, meta = read_safetensors(tmp_path / "e" / "diffusion_pytorch_model.safetensors")
    assert meta == {"format": "pt"}
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    saved = json.loads((tmp_path / "d" / "config.json").read_text())
    ours = json.loads((tmp_path / "e" / "config.json").read_text())
    assert set(saved) == set(ours)
    assert {k: v for k, v in saved.items() if k != "_diffusers_version"} == {
        k: v for k, v in ours.items() if k != "_diffusers_version"
    }


def test_old_attention_key_names_load(tmp_path):
    config = CONFIGS["class_cond_learned_var"]
    weights = state_numpy(diffusers_unet(config))
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in weights.items():
        for new, old in old_names.items():
            k = k.replace(f".{new}.", f".{old}.")
        renamed[k] = v
    assert any(".proj_attn." in k for k in renamed)
    save_diffusers(tmp_path / "m", config, weights)
    write_safetensors(tmp_path / "m" / "diffusion_pytorch_model.safetensors", renamed)
    _, loaded = load_diffusers(tmp_path / "m")
    assert list(loaded) == list(weights)
    for k in weights:
        assert np.array_equal(loaded[k], weights[k])


def test_safetensors_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((2, 3)),
        "f32": rng.standard_normal(4).astype(np.float32),
        "f16": rng.standard_normal((1, 2)).astype(np.float16),
        "i64": np.arange(3, dtype=np.int64),
        "i32": np.arange(3, dtype=np.int32),
        "u8": np.arange(5, dtype=np.uint8),
        "empty": np.zeros((0, 3), np.float32),
    }
    write_safetensors(tmp_path / "a.safetensors", arrays, {"k": "v"})
    back, meta = read_safetensors(tmp_path / "a.safetensors")
    assert meta == {"k": "v"} and list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    # bf16 -> float32, checked against the reference implementation
    safetensors_torch = pytest.importorskip("safetensors.torch")
    bf = torch.randn(3, 2).to(torch.bfloat16)
    safetensors_torch.save_file({"w": bf}, str(tmp_path / "bf.safetensors"))
    back, _ = read_safetensors(tmp_path / "bf.safetensors")
    assert back["w"].dtype == np.float32 and np.array_equal(back["w"], bf.float().numpy())


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_image_size_not_divisible_names_shape_and_factor():
    config = CONFIGS["pad1_three_levels"]
    net = tnet.UNet2D(config)
    with pytest.raises(ValueError, match=r"\(1, 3, 6, 8\).*multiples of 4"):
        net(torch.zeros(1, 3, 6, 8), torch.ones(1))


def test_channel_mismatch_names_counts():
    net = tnet.UNet2D(CONFIGS["pad1_three_levels"])
    with pytest.raises(ValueError, match=r"sample has 1 channels.*in_channels=3"):
        net(torch.zeros(1, 1, 8, 8), torch.ones(1))


def test_time_and_label_errors_name_the_argument():
    net = tnet.UNet2D(CONFIGS["class_cond_learned_var"])
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"t_in has shape \(3,\); expected \(2,\)"):
        net(x, torch.ones(3))
    with pytest.raises(ValueError, match=r"cond has shape \(1,\); expected \(2,\)"):
        net(x, torch.ones(2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"cond must be an integer tensor"):
        net(x, torch.ones(2), torch.zeros(2))
    plain = tnet.UNet2D(CONFIGS["pad1_three_levels"])
    with pytest.raises(ValueError, match=r"no class embedding \(num_class_embeds is None\)"):
        plain(x, torch.ones(2), torch.zeros(2, dtype=torch.long))


def test_unknown_block_type_lists_valid_ones(tmp_path):
    config = CONFIGS["pad1_three_levels"]
    save_diffusers(tmp_path / "m", config, state_numpy(diffusers_unet(config)))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["down_block_types"][1] = "CrossAttnDownBlock2D"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"CrossAttnDownBlock2D.*DownBlock2D.*AttnDownBlock2D"):
        load_diffusers(tmp_path / "m")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("upsample_type", "resnet", r"upsample_type='resnet'"),
        ("class_embed_type", "timestep", r"class_embed_type='timestep'"),
        ("act_fn", "gelu", r"act_fn='gelu'"),
        ("resnet_time_scale_shift", "spatial", r"resnet_time_scale_shift='spatial'"),
        ("cross_attention_dim", 8, r"unknown key 'cross_attention_dim'"),
    ],
)
def test_unsupported_config_values_are_named(tmp_path, key, value, message):
    config = CONFIGS["pad1_three_levels"]
    save_diffusers(tmp_path / "m", config, state_numpy(diffusers_unet(config)))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        load_diffusers(tmp_path / "m")


def test_missing_unexpected_and_misshapen_weights_are_listed():
    config = CONFIGS["class_cond_learned_var"]
    weights = state_numpy(diffusers_unet(config))
    net = tnet.UNet2D(config)
    before = tnet.to_numpy_weights(net)
    bad = dict(weights)
    del bad["conv_in.bias"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["conv_out.weight"] = np.zeros((6, 32, 1, 1), np.float32)
    with pytest.raises(WeightsError) as err:
        tnet.load_numpy_weights(net, bad)
    msg = str(err.value)
    assert "missing 1 weight(s): conv_in.bias" in msg
    assert "unexpected 1 weight(s): extra.weight" in msg
    assert "conv_out.weight: expected shape (6, 32, 3, 3), found (6, 32, 1, 1)" in msg
    # nothing was assigned
    after = tnet.to_numpy_weights(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_truncated_and_corrupted_safetensors_are_named(tmp_path):
    config = CONFIGS["pad1_three_levels"]
    save_diffusers(tmp_path / "m", config, state_numpy(diffusers_unet(config)))
    path = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 100])
    with pytest.raises(SafetensorsError, match=r"diffusion_pytorch_model\.safetensors.*truncated"):
        load_diffusers(tmp_path / "m")
    path.write_bytes(blob[:5])
    with pytest.raises(SafetensorsError, match=r"too short"):
        read_safetensors(path)
    path.write_bytes(blob[:8] + b"{not json" + blob[17:])
    with pytest.raises(SafetensorsError, match=r"safetensors.*header is not UTF-8 JSON"):
        read_safetensors(path)
    path.write_bytes((10**12).to_bytes(8, "little") + blob[8:])
    with pytest.raises(SafetensorsError, match=r"header length .* exceeds the file size"):
        read_safetensors(path)
    path.write_bytes(blob + b"\0" * 8)
    with pytest.raises(SafetensorsError, match=r"8 bytes after the last tensor"):
        read_safetensors(path)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [o + 4 for o in header[name]["data_offsets"]]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n :])
    with pytest.raises(SafetensorsError, match=rf"tensor '{name}' starts at data byte \d+ and (overlaps|leaves a gap)"):
        read_safetensors(path)
    path.unlink()
    (tmp_path / "m" / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"only diffusion_pytorch_model.bin, a pickle"):
        load_diffusers(tmp_path / "m")


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"down_blocks.0.resnets.0.norm1: GroupNorm over 32 channels cannot use 12 groups"):
        UNetConfig(**{**SMALL, "norm_num_groups": 12}, attention_head_dim=None)
    with pytest.raises(ValueError, match=r"attention_head_dim=24"):
        UNetConfig(**SMALL, attention_head_dim=24)
    with pytest.raises(ValueError, match=r"unknown block type 'Foo'.*valid types"):
        UNetConfig(**{**SMALL, "up_block_types": ("Foo", "UpBlock2D")})
    with pytest.raises(ValueError, match=r"dropout=1.5"):
        UNetConfig(**SMALL, dropout=1.5)
    with pytest.raises(WeightsError, match="missing"):
        check_weights(MLPConfig(), {})


# --------------------------------------------------------------------------------------------
# flax nnx: outputs against diffusers, gradients against torch
# --------------------------------------------------------------------------------------------

# Compile the test functions cheaply: on this project's shared 2-core machines a default compile
# of a small U-Net's gradient takes ~30 s, these options bring it to ~7 s; results are the same
# computation to float32 rounding.
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


@pytest.fixture(scope="module")
def jax_modules():
    jax = pytest.importorskip("jax")
    nnx = pytest.importorskip("flax.nnx")
    from diffcore_jax import networks as jnet

    return jax, nnx, jnet


def jax_unet(jax_modules, config, weights):
    _, nnx, jnet = jax_modules
    return jnet.from_numpy(jnet.UNet2D, config, weights)


def jax_forward(jax_modules, model, x, t, cond):
    """Forward pass with the state as a traced argument of a jitted function (split / merge)."""
    jax, nnx, _ = jax_modules
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), compiler_options=FAST_COMPILE)
    return np.asarray(f(state, x, t, cond))


# The class-conditioned configuration (downsample_padding=1) is checked in the gradient test.
@pytest.mark.parametrize("name", ["fourier_no_mid_attention", "multihead_scale_shift_pad0"])
def test_jax_outputs_match_diffusers(jax_modules, name):
    config = CONFIGS[name]
    ref = diffusers_unet(config)
    model = jax_unet(jax_modules, config, state_numpy(ref))
    x, t, cond = inputs(config)
    want = diffusers_forward(ref, x, t, cond)
    np.testing.assert_allclose(jax_forward(jax_modules, model, x, t, cond), want, rtol=0, atol=TOL)


def test_jax_state_paths_cover_the_layout(jax_modules):
    jax, nnx, jnet = jax_modules
    for config in CONFIGS.values():
        model = jnet.UNet2D(config, rngs=nnx.Rngs(0))
        params = {tuple(p): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, jnet.FrozenParam)))}
        paths = jnet.state_paths(config)
        assert sorted(map(str, params)) == sorted(str(p) for p, _ in paths.values())
        for entry in layout(config):
            path, storage = paths[entry.name]
            want = entry.shape if storage.perm is None else tuple(entry.shape[i] for i in storage.perm)
            assert params[path].shape == want, entry.name


def test_torch_and_jax_agree_on_outputs_and_gradients(jax_modules):
    """The class-conditioned, learned-variance network (attention in the down, mid and up paths):
    outputs agree with diffusers and each other; gradients of mean(out^2) w.r.t. the input and every
    parameter agree to 1e-4 x max|g| per tensor (compared in torch layout)."""
    jax, nnx, jnet = jax_modules
    import jax.numpy as jnp

    config = CONFIGS["class_cond_learned_var"]
    ref = diffusers_unet(config)
    weights = state_numpy(ref)
    x, t, cond = inputs(config)

    net = tnet.UNet2D(config)
    tnet.load_numpy_weights(net, weights)
    xt = torch.tensor(x, requires_grad=True)
    out_t = net(xt, torch.as_tensor(t), torch.as_tensor(cond))
    (out_t**2).mean().backward()
    grads_t = {k: p.grad.numpy() for k, p in net.named_parameters()}

    model = jax_unet(jax_modules, config, weights)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, x):
        out = nnx.merge(graphdef, p, rest)(x, t, cond)
        return jnp.mean(out**2), out

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), compiler_options=FAST_COMPILE)
    (_, out_j), (grads_p, grad_x) = step(params, jnp.asarray(x))
    out_j = np.asarray(out_j)

    want = diffusers_forward(ref, x, t, cond)
    np.testing.assert_allclose(out_j, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(out_t.detach().numpy(), out_j, rtol=0, atol=TOL)

    grads_j = jnet.state_to_numpy(config, grads_p)
    assert list(grads_j) == list(grads_t) == [e.name for e in layout(config)]
    pairs = [("input", xt.grad.numpy(), np.asarray(grad_x))] + [(k, grads_t[k], grads_j[k]) for k in grads_t]
    largest = max(np.abs(gt).max() for _, gt, _ in pairs)
    for name, gt, gj in pairs:
        if name.endswith("to_k.bias"):
            # softmax(q (k + b)^T) does not depend on the key bias b: its gradient is zero and
            # both frameworks return float32 rounding noise, which no per-tensor scale bounds.
            assert max(np.abs(gt).max(), np.abs(gj).max()) <= 1e-6 * largest, name
            continue
        assert np.abs(gt - gj).max() <= 1e-4 * np.abs(gt).max(), name


def test_jax_errors_name_the_problem(jax_modules):
    _, nnx, jnet = jax_modules
    model = jnet.UNet2D(CONFIGS["pad1_three_levels"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(1, 3, 6, 8\).*multiples of 4"):
        model(np.zeros((1, 3, 6, 8), np.float32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match=r"sample has 2 channels.*in_channels=3"):
        model(np.zeros((1, 2, 8, 8), np.float32), np.ones(1, np.float32))
    before = jnet.to_numpy_weights(model)
    bad = dict(before)
    bad["conv_in.weight"] = np.zeros((16, 3, 1, 3), np.float32)
    with pytest.raises(WeightsError, match=r"conv_in.weight: expected shape \(16, 3, 3, 3\), found \(16, 3, 1, 3\)"):
        jnet.load_numpy_weights(model, bad)
    after = jnet.to_numpy_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [None, 4])
def test_mlp_torch_and_jax_agree(jax_modules, classes):
    _, nnx, jnet = jax_modules
    config = MLPConfig(data_dim=2, hidden_dim=32, num_layers=2, time_embed_dim=16, num_class_embeds=classes)
    net = tnet.MLP(config)
    weights = tnet.to_numpy_weights(net)
    assert [(k, v.shape) for k, v in weights.items()] == [(e.name, e.shape) for e in layout(config)]
    model = jnet.MLP(config, rngs=nnx.Rngs(1))
    jnet.load_numpy_weights(model, weights)
    assert all(np.array_equal(jnet.to_numpy_weights(model)[k], v) for k, v in weights.items())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2)).astype(np.float32)
    t = rng.uniform(0, 1, 5).astype(np.float32)
    cond = None if classes is None else np.array([0, 1, 2, 3, 1])
    with torch.no_grad():
        want = net(torch.as_tensor(x), torch.as_tensor(t), None if cond is None else torch.as_tensor(cond)).numpy()
    np.testing.assert_allclose(np.asarray(model(x, t, cond)), want, rtol=0, atol=TOL)


def test_jax_dropout_only_with_a_key(jax_modules):
    """Keyed dropout: none without a key (train() changes nothing); with one, layer i's mask for
    row b is uniform(fold_in(fold_in(key, i), ids[b])) >= rate, as JaxBackend.uniform draws it."""
    jax, nnx, jnet = jax_modules
    import diffcore

    config = MLPConfig(hidden_dim=16, num_layers=2, dropout=0.5)
    model = jnet.MLP(config, rngs=nnx.Rngs(0))
    assert not jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))  # no RNG state: weights only
    x, t = np.ones((4, 2), np.float32), np.full(4, 0.5, np.float32)
    graphdef, state = nnx.split(model)
    call = jax.jit(lambda s, k, ids: nnx.merge(graphdef, s)(x, t, dropout_key=k, sample_ids=ids))
    plain = np.asarray(model(x, t))
    model.train()
    np.testing.assert_array_equal(np.asarray(model(x, t)), plain)
    key = jax.random.key(3)
    ids = np.arange(4)
    a = np.asarray(call(state, key, ids))
    assert not np.allclose(a, plain)
    np.testing.assert_array_equal(np.asarray(call(state, key, ids)), a)  # same key, same masks
    np.testing.assert_array_equal(np.asarray(call(state, key, None)), a)  # ids default to arange(B)
    b = np.asarray(call(state, key, ids[::-1].copy()))
    np.testing.assert_array_equal(b[::-1], a)  # row b's mask follows its id (inputs are equal rows)
    c = np.asarray(call(state, key, ids + 4))
    assert not np.allclose(c, a)  # other ids, other masks

    # The mask by hand: the network's dropout layers replaced by the backend's uniforms.
    bk = diffcore.backend("jax")
    p = {k: np.asarray(v) for k, v in jnet.to_numpy_weights(model).items()}
    emb = np.asarray(jnet.sinusoidal_embedding(t, config.time_embed_dim, flip_sin_to_cos=config.flip_sin_to_cos,
                                               freq_shift=config.freq_shift))
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    lin = lambda z, n: z @ p[n + ".weight"].T + p[n + ".bias"]  # noqa: E731
    h = silu(lin(x, "input") + lin(silu(lin(emb, "time_embedding.linear_1")), "time_embedding.linear_2"))
    for i in range(config.num_layers):
        u = np.asarray(bk.uniform(bk.fold_in(key, i), (4, config.hidden_dim), np.float32, sample_ids=ids))
        h = h + np.where(u >= 0.5, silu(lin(h, f"layers.{i}")) / 0.5, 0.0)
    np.testing.assert_allclose(a, lin(h, "output"), rtol=1e-5, atol=1e-5)


def test_jax_unet_dropout_layers_in_layout_order(jax_modules):
    """UNet dropout layer i is the i-th resnet of the layout (down blocks, up blocks, mid block);
    with a key the masks change the output, the same key repeats it, and row b's mask follows its id."""
    jax, nnx, jnet = jax_modules
    config = CONFIGS["multihead_scale_shift_pad0"]
    model = jnet.UNet2D(config, rngs=nnx.Rngs(0))
    resnets = list(dict.fromkeys(e.name.split(".resnets.")[0] + ".resnets." + e.name.split(".resnets.")[1].split(".")[0]
                                 for e in layout(config) if ".resnets." in e.name))
    found = {}
    for path, module in nnx.iter_graph(model):
        if isinstance(module, jnet.KeyedDropout):
            found[".".join(map(str, path[:-1]))] = module.index
    assert found == {name: i for i, name in enumerate(resnets)}
    assert resnets[0].startswith("down_blocks") and resnets[-1].startswith("mid_block")

    x, t, _ = inputs(config)
    x = np.concatenate([x[:1], x[:1]])  # two equal rows: only their masks tell them apart
    t = np.concatenate([t[:1], t[:1]])
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, k, ids: nnx.merge(graphdef, s)(x, t, dropout_key=k, sample_ids=ids),
                compiler_options=FAST_COMPILE)
    key = jax.random.key(0)
    a = np.asarray(f(state, key, np.array([0, 1])))
    assert not np.allclose(a[0], a[1], atol=1e-4)  # equal inputs, different masks: dropout is on
    np.testing.assert_array_equal(np.asarray(f(state, key, np.array([1, 0]))), a[::-1])


def test_jax_mlp_trains_with_nnx_optimizer(jax_modules):
    """nnx.Optimizer over the Params, stepped inside jax.jit with the model and optimizer state
    split out as a traced argument (the pattern of a jitted training loop); the loss goes down."""
    jax, nnx, jnet = jax_modules
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    model = jnet.MLP(MLPConfig(hidden_dim=32, num_layers=1, time_embed_dim=8), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    t = rng.uniform(0, 1, 64).astype(np.float32)
    target = -x  # the score of a standard normal
    graphdef, state = nnx.split((model, optimizer))

    def step(state):
        m, opt = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x, t) - target) ** 2))(m)
        opt.update(m, grads)
        return loss, nnx.state((m, opt))

    step = jax.jit(step, compiler_options=FAST_COMPILE)
    losses = []
    for _ in range(30):
        loss, state = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    nnx.update((model, optimizer), state)
    assert int(optimizer.step[...]) == 30
