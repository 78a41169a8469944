"""The diffcore command as a user drives it: subprocesses on tiny settings, and its failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "two_moons", "--data.examples", "400", "--network.hidden_dim", "32", "--network.num_layers", "1",
        "--train.batch_size", "32", "--train.log_every", "5", "--quiet"]


def diffcore(*args, check=True, timeout=240, env=None):
    run = subprocess.run([sys.executable, "-m", "diffcore", *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check and run.returncode != 0:
        raise AssertionError(f"diffcore {' '.join(map(str, args))} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    return run


def test_train_resume_sample_nll(tmp_path):
    run = tmp_path / "vp"
    diffcore("train", "--run", run, "--model", "vp", "--steps", 20, *TINY)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["family"] == "vp" and config["train"]["steps"] == 20
    assert (run / "checkpoints" / "step_000000020" / "net" / "model.safetensors").is_file()
    assert (run / "pictures" / "loss.png").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20] and all(np.isfinite(r["loss"]) for r in lines)
    # the same command with more steps resumes; the metrics continue
    out = diffcore("train", "--run", run, "--model", "vp", "--steps", 30, *TINY[:-1])
    assert "resuming step_000000020" in out.stdout and "trained to step 30" in out.stdout
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()][-2:] == [25, 30]
    out = diffcore("sample", "--run", run, "--sampler", "ddim", "--steps", 10, "--n", 64)
    assert "energy_distance" in out.stdout and "ddim" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    row = summary["samples"]["samples-ddim"]
    assert row["NFE"] == 10 and Path(row["picture"]).is_file() and row["energy_distance"] > 0
    out = diffcore("nll", "--run", run, "--examples", 8, "--nll.rtol", "1e-2", "--nll.atol", "1e-2")
    assert np.isfinite(json.loads((run / "summary.json").read_text())["nll"]["ode"]["bits/dim"])


def test_train_on_jax_and_a_toml_config(tmp_path):
    pytest.importorskip("jax")
    cfg = tmp_path / "run.toml"
    cfg.write_text('backend = "jax"\n[model]\nfamily = "ddpm"\ntimesteps = 50\n[train]\nsteps = 8\n')
    run = tmp_path / "jax"
    diffcore("train", "--run", run, "--config", cfg, *TINY)
    config = json.loads((run / "config.json").read_text())
    assert config["backend"] == "jax" and config["model"]["timesteps"] == 50
    assert (run / "checkpoints" / "step_000000008").is_dir()
    # flags override the file (the backend too: one JAX compile per test is enough)
    run2 = tmp_path / "jax2"
    diffcore("train", "--run", run2, "--config", cfg, "--steps", 4, "--backend", "torch", *TINY)
    config = json.loads((run2 / "config.json").read_text())
    assert (config["train"]["steps"], config["backend"], config["model"]["timesteps"]) == (4, "torch", 50)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "mnist"], "unknown dataset 'mnist': built-in names are"),
        (["train", "--data", "/no/such/folder/"], "does not exist"),
        (["train", "--model", "gan"], "model.family must be one of 'ddpm', 'iddpm', 'vp'"),
        (["train", "--model", "ddpm", "--loss", "dsm"], "model.loss (for family 'ddpm') must be one of"),
        (["train", "--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["train", "--lr", "-1", "--data", "two_moons"], "lr must be a positive number"),
        (["train", "--train.batch_size", "5000", "--data", "two_moons", "--data.examples", "100"], "larger than the data"),
        (["sample", "--run", "/no/such/run"], "not a run directory"),
        (["train", "--stpes", "3"], "unrecognized arguments: --stpes"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    out = diffcore(*args, "--run", tmp_path / "r", check=False) if "--run" not in args else diffcore(*args, check=False)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstpes = 3\n")
    out = diffcore("train", "--config", bad, "--run", tmp_path / "r", check=False)
    assert out.returncode == 2 and "unknown configuration key 'train.stpes'; valid keys in [train]:" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    out = diffcore("train", "--config", broken, "--run", tmp_path / "r", check=False)
    assert out.returncode == 2 and "not valid TOML" in out.stderr


def test_a_run_of_another_model_is_not_overwritten(tmp_path):
    run = tmp_path / "r"
    diffcore("train", "--run", run, "--model", "flow", "--steps", 2, *TINY)
    out = diffcore("train", "--run", run, "--model", "vp", "--steps", 2, *TINY, check=False)
    assert out.returncode == 2 and "model.family: run has 'flow', flags give 'vp'" in out.stderr
    diffcore("train", "--run", run, "--model", "vp", "--steps", 2, "--force", *TINY)
    assert json.loads((run / "config.json").read_text())["model"]["family"] == "vp"


def test_ctrl_c_writes_a_checkpoint_and_the_run_resumes(tmp_path):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "diffcore", "train", "--run", str(run), "--model", "vp",
                             "--steps", "100000", *TINY[:-1], "--train.log_every", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted at step" in out
    step = json.loads((run / "summary.json").read_text())["steps"]
    assert (run / "checkpoints" / f"step_{step:09d}").is_dir()
    out = diffcore("train", "--run", run, "--model", "vp", "--steps", step + 3, *TINY[:-1])
    assert f"resuming step_{step:09d}" in out.stdout and f"trained to step {step + 3}" in out.stdout


def test_import_a_diffusers_unet_and_sample_it(tmp_path):
    from diffcore.networks import UNetConfig, layout, save_diffusers

    config = UNetConfig(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                        layers_per_block=1, norm_num_groups=4, add_attention=False)
    rng = np.random.default_rng(0)
    weights = {e.name: (0.05 * rng.standard_normal(e.shape)).astype(np.float32) for e in layout(config)}
    src = tmp_path / "pipe"
    save_diffusers(src / "unet", config, weights)
    (src / "scheduler").mkdir()
    (src / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 100, "beta_schedule": "linear"}))
    run = tmp_path / "imported"
    diffcore("import", src, "--run", run, "--quiet")
    assert json.loads((run / "config.json").read_text())["model"]["timesteps"] == 100
    out = diffcore("sample", "--run", run, "--sampler", "ddim", "--steps", 5, "--n", 4)
    assert "ddim" in out.stdout
    out = diffcore("import", tmp_path / "nothing", "--run", tmp_path / "x", check=False)
    assert out.returncode == 2


def test_info_lists_versions_and_backends():
    out = diffcore("info")
    assert "numpy" in out.stdout and "backend torch" in out.stdout


def test_class_conditional_digits_with_guidance(tmp_path):
    run = tmp_path / "cond"
    diffcore("train", "--run", run, "--network.class_conditional", "true", "--network.channels", "8,16",
             "--network.norm_groups", 4, "--network.attention", "false", "--steps", 4, "--quiet")
    assert json.loads((run / "config.json").read_text())["train"]["cond_dropout"] == 0.1
    diffcore("sample", "--run", run, "--guidance", 2, "--label", 3, "--inpaint", "left", "--steps", 4, "--n", 10)
    row = json.loads((run / "summary.json").read_text())["samples"]["samples-ddim-inpaint-left"]
    assert row["NFE"] == 8 and "coverage" in row  # two network calls a step


def test_colorize_and_trajectory_on_user_rgb_images(tmp_path):
    """No 3-channel data ships: a tiny (N, 3, 8, 8) uint8 .npy; two training steps, three sampling steps."""
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", images)
    run = tmp_path / "rgb"
    diffcore("train", "--run", run, "--data", tmp_path / "rgb.npy", "--network.channels", "8,16", "--network.norm_groups", 4,
             "--network.attention", "false", "--steps", 2, "--train.batch_size", 8, "--quiet")
    diffcore("sample", "--run", run, "--colorize", "--trajectory", "--steps", 3, "--n", 6, "--quiet")
    row = json.loads((run / "summary.json").read_text())["samples"]["samples-ddim-colorize"]
    x = np.load(run / "pictures" / "samples-ddim-colorize.npy")
    grey = x.mean(axis=1)  # 4 held-out images, fewer than 6: the first one six times
    data_grey = (images / 127.5 - 1.0).mean(axis=1)
    assert np.abs(grey - grey[:1]).max() < 1e-4 and np.abs(data_grey - grey[0]).max(axis=(1, 2)).min() < 1e-4  # float32
    assert x.std(axis=1).mean() > 0.05  # the colours are generated, not grey
    # x at 0, 1, 2 and 3 steps (4 columns) of 6 samples, 8 px cells upscaled 6x with 1 px borders
    assert Image.open(row["trajectory"]).size == (4 * 49 + 1, 6 * 49 + 1)
    assert Path(row["comparison"]).is_file()


def test_colorize_refuses_grey_data(tmp_path, capsys):
    from diffcore import run as recipes
    from diffcore.cli import main

    run = tmp_path / "digits"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(recipes.resolve({"data": {"name": "digits"}})))
    assert main(["sample", "--run", str(run), "--colorize"]) == 2
    err = capsys.readouterr().err
    assert "--colorize needs colour images (3 channels, data of shape (3, H, W)); data 'digits' holds 1-channel images" in err
    assert main(["sample", "--run", str(run), "--colorize", "--inpaint", "left"]) == 2
    assert "--colorize and --inpaint both choose the known part" in capsys.readouterr().err


def _two_processes_train_and_sample_as_one(tmp_path, launch_two, args, *, steps, rtol, env=None):
    """``launch_two(*cli)`` runs the command on two processes; the same run on one (``env``) must
    reach the same weights and EMA (``rtol``) after ``steps``, and draw the same 9 samples. Returns
    the two-process run's directory."""
    from diffcore.checkpoints import latest_checkpoint, load_checkpoint

    two, one = tmp_path / "two", tmp_path / "one"
    launch_two("train", "--run", two, *args)
    diffcore("train", "--run", one, *args, env=env)
    a, b = (load_checkpoint(latest_checkpoint(r)) for r in (two, one))
    assert (a.state["processes"], b.state["processes"], a.step) == (2, 1, steps)
    for name in b.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=rtol, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(a.ema[name], b.ema[name], rtol=rtol, atol=1e-6, err_msg=name)
    sample = ["sample", "--run", two, "--sampler", "euler_maruyama", "--steps", 8, "--n", 9, "--quiet"]
    launch_two(*sample)
    x2 = np.load(two / "pictures" / "samples-euler_maruyama.npy")
    diffcore(*sample, env=env)
    x1 = np.load(two / "pictures" / "samples-euler_maruyama.npy")
    assert x1.shape == (9, 2)
    np.testing.assert_allclose(x2, x1, rtol=1e-5, atol=1e-5)
    return two


def test_torchrun_trains_and_samples_the_same_as_one_process(tmp_path):
    """`torchrun --nproc_per_node=2 -m diffcore -- train / sample`: DDP over gloo, each rank its
    block of the batch and of the samples; rank 0 writes. The same run trained by one process has
    the same weights, and the samples of 2 ranks equal those of 1, example by example (nll's
    sharding: test_nll_and_sample_on_two_thread_ranks_equal_one_process)."""
    from test_torch_distributed import TORCHRUN  # skips without torch.distributed and gloo

    args = [*TINY, "--model", "vp", "--steps", 6, "--network.dropout", "0.1", "--train.ema_decay", "0.9"]

    def torchrun(*cli):
        # "--": torchrun's own parser would take --run for an abbreviation of its --run-path
        cmd = [*TORCHRUN, "-m", "diffcore", "--", *map(str, cli)]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        return run

    two = _two_processes_train_and_sample_as_one(tmp_path, torchrun, args, steps=6, rtol=1e-5)
    assert json.loads((two / "summary.json").read_text())["steps"] == 6


def test_nll_and_sample_on_two_thread_ranks_equal_one_process(tmp_path, monkeypatch, torch_one_thread):
    """The command's sharded nll and sample (each rank its block of examples, global sample_ids,
    gathered in order) on a world of two threads: 3 examples make shards of 2 and 1, where every
    rank must still join each gather (one rank skipping one hung the job)."""
    pytest.importorskip("torch")
    import threading

    import diffcore.cli as cli
    from test_distributed import ThreadWorld

    run = tmp_path / "moons"
    assert cli.main(["train", "--run", str(run), *map(str, TINY), "--model", "vp", "--steps", "3"]) == 0
    nll = ["nll", "--run", str(run), "--examples", "3", "--nll.rtol", "1e-3", "--nll.atol", "1e-3", "--quiet"]
    sample = ["sample", "--run", str(run), "--sampler", "euler_maruyama", "--steps", "6", "--n", "5", "--quiet"]

    def results():
        summary = json.loads((run / "summary.json").read_text())
        return summary["nll"]["ode"], np.load(run / "pictures" / "samples-euler_maruyama.npy")

    assert cli.main(nll) == 0 and cli.main(sample) == 0
    (one_nll, one_x) = results()
    board, sync, codes = [None, None], threading.Barrier(2, timeout=60), []
    worlds = [ThreadWorld(r, 2, board, sync) for r in range(2)]
    local = threading.local()
    monkeypatch.setattr(cli, "_world", lambda bk, config: local.world)

    def rank(r):
        local.world = worlds[r]
        codes.append(cli.main(nll))
        codes.append(cli.main(sample))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [0, 0, 0, 0]
    two_nll, two_x = results()
    assert two_nll["examples"] == 3
    # float32 matmuls round a row differently at another batch size; the adaptive solve carries that far below its rtol
    np.testing.assert_allclose(two_nll["bits/dim"], one_nll["bits/dim"], rtol=1e-3)
    # the step-size controller sees its shard's error norm: the step count may differ by a few
    assert abs(two_nll["NFE"] - one_nll["NFE"]) <= 0.1 * one_nll["NFE"], (two_nll["NFE"], one_nll["NFE"])
    np.testing.assert_allclose(two_x, one_x, rtol=1e-5, atol=1e-5)


def test_two_jax_processes_train_and_sample_as_one(tmp_path):
    """The command in a `jax.distributed` job of two processes (one CPU device each, named by
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID as a launcher sets them): the
    batch sharded over the two processes' devices, process 0 writes; the weights equal one
    process's, and the samples and bits/dim of the two (each its block, global sample_ids) equal
    one process's. (It found that JAX reads only the address from the environment, and that the
    default device was process 0's in every process.)"""
    pytest.importorskip("jax")
    from test_jax_distributed import _env, _free_port

    args = ["--backend", "jax", *TINY, "--model", "vp", "--steps", 4, "--train.ema_decay", "0.9"]

    def job(*cli):
        port, procs = _free_port(), []
        for rank in range(2):
            env = {**_env(1), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                   "JAX_PROCESS_ID": str(rank)}
            procs.append(subprocess.Popen([sys.executable, "-m", "diffcore", *map(str, cli)], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=240)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    two = _two_processes_train_and_sample_as_one(tmp_path, job, args, steps=4, rtol=2e-5, env=_env(1))
    nll = ["nll", "--run", two, "--examples", 3, "--nll.rtol", "1e-3", "--nll.atol", "1e-3", "--quiet"]
    job(*nll)
    bpd2 = json.loads((two / "summary.json").read_text())["nll"]["ode"]["bits/dim"]
    diffcore(*nll, env=_env(1))
    bpd1 = json.loads((two / "summary.json").read_text())["nll"]["ode"]["bits/dim"]
    np.testing.assert_allclose(bpd2, bpd1, rtol=1e-3)  # shards of 2 and 1: the solver's steps may differ slightly
