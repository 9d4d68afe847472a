"""The `--set` cuts under which each study's `full` preset runs end to end in tests/test_full_presets*.py.

Each cut only shrinks scale (steps, images, seeds, grid points, Monte Carlo draws, simulation steps); the rest of
every `full` config (data set, model, recipe, protocol) stays the paper's. Images: the tiny data sets of
`_full_presets_data` (16 train / 8 test classification images, 4 VOC images per split).
"""

# Studies whose `full` preset reads a tfds data set, and the data sets it needs.
NEEDS_DATA = {
    "mnist_baseline": ("mnist",),
    "hat": ("cifar10",),
    "hat_lenet": ("mnist",),
    "gbo": ("cifar10",),
    "snn_coding": ("cifar10",),
    "spiking_yolo": ("voc/2007",),
}

CUTS = {
    "mnist_baseline": ["train.steps=2", "train.batch_size=8"],
    # ResNet-18 at width 8 (the paper's: 64), 30 steps (10 left 0 % clean accuracy on the tiny set), HAT only (plain
    # shares its trainer and analyses and runs in the hat smoke test) with its penalty on the classifier block (the
    # library's "last layers only" option; the forward and backward still run through all of ResNet-18 with batch
    # norm; HAT on every layer runs in the hat and hat_lenet smoke tests: here it costs 20 s of compilation), a
    # 16-flip sweep of the classifier leaf.
    "hat": ["data.val_size=4", "data.sweep_images=6", "data.trace_images=4", "data.bn_images=0", "train.steps=30",
            "train.batch_size=8", "methods.methods=hat", "methods.hat_lams=0.01", "methods.hat_layers=Dense_0",
            "eval.sweep_params=2", "eval.sweep_min_per_leaf=1", "eval.sweep_leaves=params/Dense_0",
            "eval.screen_images=0", "eval.trace_probes=1", "eval.eig_iters=1", "eval.attack_seeds=1",
            "eval.attack_iters=1", "eval.random_draws=1", "seeds=0", "model.width=8"],
    # HAT only (on every layer, the full preset's setting; plain LeNet-5 runs in the hat_lenet smoke test).
    "hat_lenet": ["data.val_size=4", "data.screen_images=8", "data.mid_images=8", "data.bfa_images=4",
                  "data.sweep_params=8", "train.steps=30", "train.batch_size=8", "methods.methods=hat",
                  "methods.hat_lams=0.01", "defenses.group_sizes=64", "defenses.bfa_seeds=()", "seeds=0"],
    "gbo": ["train.epochs=1", "train.batch_size=8", "data.cifar_val_size=4", "hardware.ref_chips=1",
            "hardware.bisection_steps=2", "hardware.sigma_multipliers=2.0", "search.uniform=1,2", "search.budgets=2",
            "search.epochs=1", "search.batch_size=4", "search.sens_batches=1", "search.sens_batch_size=4",
            "search.validate_chips=1", "eval.chips=1", "eval.batch_size=8", "eval.bn_images=0", "eval.check_size=0"],
    "snn_coding": ["train.epochs=1", "train.batch_size=8", "snn.t_rate=4", "snn.t_phase=4", "snn.t_w=2",
                   "snn.t_s_ef=1", "snn.rows=burst", "snn.go_passes=1", "snn.go_images=8",
                   "snn.go_batch=8", "snn.sim_batch=8", "snn.n_boot=10"],
    # Tiny YOLO's nine convs and five pools at a quarter of its widths (16..1024 -> 4..256): one forward of the
    # full widths on 64 px images costs 0.34 s here.
    "spiking_yolo": ["data.max_size=64", "data.image_size=64", "train.epochs=1", "train.batch_size=8",
                     "train.warmup_steps=1", "snn.eval_every=2", "snn.T=4", "snn.sim_batch=4",
                     "model.widths=4,8,16,32,64,128,256,256"],
    # Per-task only (the joint model, the bit sweep and the integer kernels run in the qmann smoke test).
    "qmann": ["data.joint=false", "data.tasks=1", "data.train_limit=100", "per_task_train.epochs=1",
              "per_task_train.decay_every=1", "per_task_train.ls_epochs=1", "per_task_train.buckets=50",
              "eval.seeds=1"],
    "ispml": ["data.train_size=400", "data.test_size=200", "hardware.channels=16,32",
              "hardware.memory_fractions=1.0,0.25", "hardware.host_compute=flops", "train.epochs=1",
              "train.taus=1", "eval.evals_per_epoch=2"],
    # One process and two devices: the smoke scale (the 2-process jax.distributed run is in the cluster smoke test
    # and test_parallel_multiprocess).
    "cluster": ["measure.processes=1", "measure.devices=1,2", "measure.steps=2", "measure.repeats=2",
                "measure.width=32",
                "measure.heldout_widths=64", "measure.batch=32", "measure.train_size=128",
                "measure.psum_sizes=4096", "sensitivity.goodputs=40000000.0", "sensitivity.contentions=0.03",
                "sensitivity.batches=128", "large_batch.batches=64", "large_batch.methods=linear,lars",
                "large_batch.epochs=1", "large_batch.train_size=256", "large_batch.test_size=100",
                "large_batch.width=32"],
    "compose": ["data.val_size=100", "data.train_size=400", "data.test_size=400", "data.eval_images=100",
                "mlp.train.epochs=1", "snn.epochs=1", "snn.steps=4", "snn.layers=Conv_0", "snn.bits=30",
                "snn.images=16", "snn.screen_images=0", "noise.sigmas=0.0,0.1", "noise.chips=2", "ber.bers=0.001",
                "ber.draws=2"],
}


# Cut, these full presets are their smoke runs (same data, code paths and scale; every value that makes them `full`
# is cut), so their end-to-end run is their smoke test; test_full_presets.py checks that the cut applies.
SMOKE_SCALE_CUTS = ("cluster", "compose")


def run_full(study, tmp_path, monkeypatch, data_dir=None):
  """Runs `jaxhw run STUDY --preset full` with the study's cuts; returns (summary, config.json, report.md)."""
  import json

  from jaxhw.cli import main

  if data_dir is not None:
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  sets = [a for item in CUTS[study] for a in ("--set", item)]
  assert main(["run", study, "--preset", "full", "--quiet", "--workdir", str(tmp_path), *sets]) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  config = json.loads((tmp_path / "config.json").read_text())
  return summary, config, (tmp_path / "report.md").read_text()
