import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import FAST, REPO, assert_user_error, run_cli, run_subprocess, script, snapshot
from mnist_kit import ConfigError, config
from mnist_kit.experiments import listing
from mnist_kit.models import registry


def test_default_config_is_configs_cnn_yaml_with_the_classic_recipe():
    cnn, defaults = config.load(REPO / "configs" / "cnn.yaml"), config.defaults()
    # the same data and network; cnn.yaml's recipe (issue 28) and its transforms are the only differences
    assert config.differences(defaults, cnn) == {
        "loss.label_smoothing": (0.0, 0.1), "optimizer.lr": (0.001, 0.003), "schedule.name": ("constant", "cosine"),
        "schedule.warmup_epochs": (0.0, 0.1), "schedule.end_lr": ("(unset)", 0.0), "train.batch_size": (64, 32),
        "augment.rotate": (0.0, 10.0), "augment.scale": (0.0, 0.1), "augment.translate": (0.0, 0.1),
        "model.init": ("default", "torch")}


@pytest.mark.parametrize("name", ["linear", "mlp", "cnn"])
def test_shipped_configs_are_valid_and_name_their_model(name):
    cfg = config.load(REPO / "configs" / f"{name}.yaml")
    assert cfg.model.name == name


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        extra = ["data.folder=cards"] if path.stem.startswith("folder") else []
        assert config.load(path, extra).model.name in config.MODELS, path
    with pytest.raises(ConfigError, match="data.folder is required"):
        config.load(REPO / "configs" / "folder.yaml")


def test_the_schema_takes_its_choices_from_the_registry_and_every_entry_builds():
    """One list of names (models/registry.py): the schema offers exactly its names, and each resolves to a
    builder (an entry whose module or attribute was renamed fails here, not in a user's run)."""
    schema = config.SCHEMA
    for section, table in (("model", registry.MODELS), ("loss", registry.LOSSES),
                           ("optimizer", registry.OPTIMIZERS), ("schedule", registry.SCHEDULES)):
        assert schema[section]["name"].choices == tuple(table), section
    assert schema["model"]["activation"].choices == tuple(registry.ACTIVATIONS)
    assert schema["model"]["init"].choices == registry.INITS
    for table in (registry.MODELS, registry.LOSSES, registry.OPTIMIZERS, registry.SCHEDULES, registry.ACTIVATIONS,
                  registry.BLOCK_ACTIVATIONS, registry.POOLS):
        for name in table:
            assert callable(registry.resolve(table, name)), (name, table[name])


def test_unknown_key_names_path_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: cnn\n  chanels: [8, 8]\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert "unknown key 'model.chanels'" in str(e.value)
    assert "did you mean 'model.channels'" in str(e.value)


def test_unknown_section_suggests():
    with pytest.raises(ConfigError, match=r"unknown section 'optimiser'.*did you mean 'optimizer'"):
        config.validate({"optimiser": {"lr": 0.1}})


@pytest.mark.parametrize("section,key,allowed", [
    ("model", "resnet", "linear, mlp, cnn"),
    ("loss", "hinge", "cross_entropy, mse"),
    ("optimizer", "lamb", "sgd, momentum, adagrad, rmsprop, adam, adamw"),
    ("schedule", "onecycle", "constant, step, polynomial, cosine"),
    ("data", "cifar10", "mnist, fashion-mnist"),
])
def test_unknown_names_list_allowed_values(section, key, allowed):
    with pytest.raises(ConfigError) as e:
        config.validate({section: {"name": key}})
    assert f"allowed: {allowed}" in str(e.value)


@pytest.mark.parametrize("override,message", [
    ("train.epochs=two", "train.epochs must be an integer"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("optimizer.lr=fast", "optimizer.lr must be a number"),
    ("model.channels=8", "model.channels must be a list of integers"),
    ("model.batch_norm=maybe", "model.batch_norm must be true or false"),
    ("train.device=tpu", "train.device is 'tpu'; allowed: cpu, gpu, gpu:N"),
    ("model.kernel_size=4", "kernel_size must be odd"),
])
def test_wrong_types_and_values(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [override])


def test_key_that_does_not_apply_to_the_chosen_name_is_a_mismatch():
    with pytest.raises(ConfigError, match=r"loss.label_smoothing does not apply to loss 'mse'"):
        config.load(None, ["loss.name=mse", "loss.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match=r"model.hidden does not apply to model 'cnn' \(it applies to: mlp\)"):
        config.load(None, ["model.hidden=[10]"])


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        config.load(None, ["train.epochs=x", "optimizer.lr=y", "model.nme=z"])
    assert str(e.value).count("\n  - ") == 3


def test_overrides_are_yaml_scalars_never_eval():
    cfg = config.load(None, ["optimizer.lr=1e-3", "model.channels=[8, 16]", "train.amp=false"])
    assert cfg.optimizer.lr == 0.001 and cfg.model.channels == (8, 16)
    with pytest.raises(ConfigError, match="must be an integer"):
        config.load(None, ["train.seed=__import__('os').getpid()"])
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(None, ["train.seed"])
    with pytest.raises(ConfigError, match="must be section.key"):
        config.load(None, ["seed=1"])


def test_override_switching_the_name_drops_keys_of_the_old_name(tmp_path):
    # configs/cnn.yaml sets cnn-only keys; switching model.name must say so instead of silently ignoring them
    with pytest.raises(ConfigError, match="model.channels does not apply to model 'mlp'"):
        config.load(REPO / "configs" / "cnn.yaml", ["model.name=mlp"])
    cfg = config.load(None, ["model.name=mlp"])
    assert "channels" not in cfg.model.to_dict() and cfg.model.hidden == (256, 128)
    # null removes a key, so a config file's key can be dropped from the command line
    cfg = config.load(REPO / "configs" / "cnn.yaml", ["model.name=mlp", "model.channels=null",
                                                      "model.kernel_size=null", "model.batch_norm=null"])
    assert cfg.model.name == "mlp" and "channels" not in cfg.model.to_dict()
    cfg = config.load(REPO / "configs" / "mlp.yaml", ["optimizer.lr=null"])
    assert cfg.optimizer.lr == config.SCHEMA["optimizer"]["lr"].default


def test_print_config_round_trips(tmp_path):
    result = run_cli("train", "--config", REPO / "configs" / "mlp.yaml", "-o", "optimizer.lr=0.05", "--seed", "7",
                     "--print-config")
    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["optimizer"]["lr"] == 0.05 and printed["train"]["seed"] == 7
    assert printed == config.load(REPO / "configs" / "mlp.yaml", ["optimizer.lr=0.05", "train.seed=7"]).to_dict()


def test_config_errors_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: cnn, chanels: [1]}\n")
    proc = run_subprocess("train", "--config", bad)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "did you mean 'model.channels'" in proc.stderr


@pytest.mark.parametrize("content,message", [
    ("model: [1, 2", "is not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("model: 3\n", "model must be a mapping"),
])
def test_malformed_yaml(tmp_path, content, message):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    result = run_cli("train", "--config", p)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_config_file():
    result = run_cli("train", "--config", "nope.yaml")
    assert result.exit_code == 2
    assert "config file not found: nope.yaml" in result.output


def test_the_hyper_parameters_a_run_shows_lead_with_what_tells_runs_apart():
    cfg = config.defaults().to_dict()
    cfg["optimizer"]["weight_decay"] = 0.01  # changed from the default
    cfg["log"]["images"] = False  # not a hyper-parameter
    keys = listing.hparams_shown(cfg, also=["model.dropout"])  # a sweep's axis: shown even at its default
    assert keys == ["model.name", "optimizer.name", "optimizer.lr", "train.batch_size", "model.dropout",
                    "optimizer.weight_decay"]


# ---------------------------------------------------------------- shipped configs by name

def test_the_shipped_configs_are_the_packages_and_each_opens_with_its_purpose():
    assert (REPO / "configs").resolve() == config.SHIPPED  # a clone's configs/ is the package's folder
    found = config.shipped()
    assert {"cnn", "cnn_fast", "cnn_best", "cnn_best_fashion", "folder"} <= set(found)
    for name, path in found.items():
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and first.endswith((".", ")")) and len(first) <= 110, (name, first)


def test_configs_lists_every_shipped_config_with_its_purpose_and_show_prints_one_as_written():
    listed = run_cli("configs")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    for name, path in config.shipped().items():
        assert any(line.split() and line.split()[0] == name and config.purpose(path) in line for line in lines), name
    shown = run_cli("configs", "show", "cnn_fast")
    assert shown.exit_code == 0 and shown.stdout == (REPO / "configs" / "cnn_fast.yaml").read_text(encoding="utf-8")
    assert run_cli("configs", "show", "cnn_fast.yaml").stdout == shown.stdout
    defaults = run_cli("configs", "show", "defaults")
    assert yaml.safe_load(defaults.stdout) == config.defaults().to_dict()
    wrong = run_cli("configs", "show", "cnn_fats")
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert wrong.output.strip().splitlines() == [wrong.output.strip()]  # one line
    assert "no shipped config is called 'cnn_fats'" in wrong.output and "did you mean 'cnn_fast'" in wrong.output


@pytest.mark.parametrize("given", ["cnn_fast", "cnn_fast.yaml"])
def test_config_by_name_takes_the_shipped_one_and_says_so(given):
    shipped = REPO / "configs" / "cnn_fast.yaml"
    result = run_cli("train", "--config", given, "--print-config")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == config.load(shipped).to_dict()
    assert f"config: the shipped cnn_fast ({shipped.resolve()})" in result.output


def test_a_file_of_that_name_in_the_current_folder_wins_and_the_command_says_which(tmp_path):
    (tmp_path / "cnn.yaml").write_text("optimizer:\n  lr: 0.0123\n")
    result = run_cli("train", "--config", "cnn.yaml", "--print-config")
    assert result.exit_code == 0 and yaml.safe_load(result.stdout)["optimizer"]["lr"] == 0.0123
    assert "config: cnn.yaml (the file in this folder, not the shipped cnn:" in result.output
    (tmp_path / "sub").mkdir()  # a path is a path: no shipped config stands in for a missing file
    missing = run_cli("train", "--config", "sub/cnn.yaml", "--print-config")
    assert missing.exit_code == 2 and "config file not found: sub/cnn.yaml" in missing.output


def test_an_unknown_config_lists_the_shipped_names_in_one_line():
    result = run_cli("train", "--config", "cnn_bset")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "config file not found: cnn_bset; the shipped configs, by name: cnn, " in result.output
    assert "did you mean 'cnn_best'" in result.output


@pytest.mark.parametrize("command", [["prepare"], ["train"], ["eval"], ["resume"], ["export"], ["predict", "x.png"],
                                     ["serve"], ["runs"], ["board"]])
def test_print_config_works_wherever_config_is_taken(command):
    result = run_cli(*command, "--config", "cnn_fast", "--print-config")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == config.load(REPO / "configs" / "cnn_fast.yaml").to_dict()


def test_sweep_print_config_prints_every_run_of_the_grid():
    result = run_cli("sweep", "--config", "cnn", "-o", "optimizer.lr=0.1,0.01", "-o", "train.epochs=1",
                     "--print-config")
    assert result.exit_code == 0, result.output
    runs = list(yaml.safe_load_all(result.stdout))
    assert [r["optimizer"]["lr"] for r in runs] == [0.1, 0.01] and {r["train"]["epochs"] for r in runs} == {1}
    assert not os.listdir(".")  # nothing trained, no sweep folder made


# ---------------------------------------------------------------- every number has a range; YAML is bounded

@pytest.mark.parametrize("args,phrase", [
    (["--seed", "-1"], "train.seed must be >= 0"),
    (["--seed", "99999999999999999999999"], "train.seed must be <= 4294967295, got 99999999999999999999999"),
    (["-o", "data.split_seed=-5"], "data.split_seed must be >= 0"),
    (["-o", "train.batch_size=99999999999999999999"], "train.batch_size must be <= 65536"),
    (["-o", "model.channels=[100000,100000]"], "model.channels must be <= 1024"),
    (["-o", "model.kernel_size=100001"], "model.kernel_size must be <= 31"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.image_size=[30000,30000]"],
     "data.image_size must be <= 4096"),
    (["-o", "model.channels=[" + ",".join(["8"] * 1000) + "]"], "model.channels has 1000 values; at most 64"),
])
def test_numbers_out_of_range_are_refused(args, phrase):
    result = run_cli("train", *args, "--print-config")
    assert_user_error(result, phrase)
    assert result.exit_code == 2 and len(result.output) < 2000


def test_every_number_in_the_schema_has_a_range():
    from mnist_kit.config import SCHEMA

    unbounded = [f"{s}.{k}" for s, fields in SCHEMA.items() for k, f in fields.items()
                 if f.kind in ("int", "float", "ints", "float_or_auto") and (f.min is None or f.max is None)]
    assert unbounded == []


@pytest.mark.parametrize("text,phrase", [
    ("train:\n  epochs: " + "[" * 20000 + "\n", "nested more than 8 levels deep"),
    ("a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nmodel:\n  channels: *g\n", "aliases (*name) are not allowed"),
    ("train:\n  epochs: 3\n  epochs: 5\n", "'epochs' is given twice"),
])
def test_hostile_yaml_is_refused_quickly_with_a_short_message(tmp_path, text, phrase):
    import time

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    start = time.perf_counter()
    result = run_cli("train", "--config", path, "--print-config")
    assert time.perf_counter() - start < 10
    assert_user_error(result, phrase)
    assert len(result.output) < 2000


@pytest.mark.parametrize("name", ["a\nb", " ", "~", "-o", ".hidden", "x" * 300, "a/b", ".."])
def test_run_names_are_plain_folder_names(trained, tmp_path, name):
    before = snapshot(tmp_path)
    assert_user_error(run_cli("train", *FAST, "--name", name), "output.name",
                      "control characters" if "\n" in name else "a run name is a plain folder name")
    assert snapshot(tmp_path) == before


def test_a_relative_data_root_is_recorded_as_an_absolute_path(trained, tmp_path, monkeypatch):
    import yaml

    monkeypatch.delenv("MNIST_KIT_DATA")
    result = run_cli("train", *FAST, "-o", "data.root=data", "-o", "train.epochs=1", "--name", "rel")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load(Path("checkpoints/rel/config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    evaluated = run_cli("eval", "--run", tmp_path / "checkpoints" / "rel")  # the same data from another folder
    assert evaluated.exit_code == 0 and "prepared again" not in evaluated.output, evaluated.output


def test_the_benchmarks_overrides_are_a_valid_config():
    """scripts/bench.py trains cnn.yaml's network with the classic recipe by overrides; a config change that
    refuses them stops the benchmark at its first mnist-kit row (it did once: schedule.end_lr)."""
    bench = script("bench")
    for batch in ("64", "256"):
        cfg = config.load(REPO / "configs" / "cnn.yaml", [*bench.CLASSIC, f"data.name={bench.DATASET}",
                                                          f"train.batch_size={batch}"])
        assert cfg.schedule.name == "constant" and cfg.optimizer.lr == 0.001


def test_the_benchmarks_flops_per_training_image_are_the_hand_count():
    # cnn.yaml: conv 1->20 5x5 on 28x28 (784,000 forward), conv 20->20 5x5 on 14x14 (3,920,000), linear 980->10
    # (19,600); forward, weight gradient and input gradient each, less the first conv's input gradient
    bench = script("bench")
    cfg = config.load(REPO / "configs" / "cnn.yaml", [])
    assert bench.train_flops_per_image(cfg.model, (1, 28, 28)) == 3 * (784_000 + 3_920_000 + 19_600) - 784_000
    kernels = ("onednn_verbose,v1,info,cpu,isa:Intel AVX2\n"
               "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src,,,mb64_ic1oc20,0.5\n"
               "onednn_verbose,v1,primitive,exec,cpu,convolution,ref:any,backward_weights,src,,,mb2_ic1oc4,0.1\n"
               "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx2,undef,src,,,2048x2048:2048x2048,9\n")
    assert bench.kernels(kernels) == ("Intel AVX2", ["convolution backward_weights: jit:avx2"])


LONG = "9" * 4301  # one digit over Python's int() limit: int(LONG) raises ValueError


@pytest.mark.parametrize("where", ["-o", "config file", "sweep grid", "sweep grid in a list", "hex"])
def test_an_integer_longer_than_pythons_limit_is_one_line(tmp_path, where):
    """Issue 40: an integer of more than 4,300 digits ended in a traceback wherever YAML is read."""
    args = {"-o": ["train", "-o", f"train.epochs={LONG}"],
            "config file": ["train", "--config", tmp_path / "c.yaml"],
            "sweep grid": ["sweep", "-o", f"train.epochs=1,{LONG}", "--print-config"],
            "sweep grid in a list": ["sweep", "-o", f"model.channels=[8,{LONG}],[8,16]", "--print-config"],
            "hex": ["train", "-o", f"train.epochs=0x{LONG}"]}[where]
    (tmp_path / "c.yaml").write_text(f"train:\n  epochs: {LONG}\n")
    result = run_cli(*args)
    assert_user_error(result, "an integer of")
    assert result.exit_code == 2 and len(result.output) < 2000, result.output


def test_a_yaml_error_is_one_line_that_says_where(tmp_path):
    """PyYAML's own message is four lines (a mark, a snippet, a caret): one line, with the line and column."""
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  lr: [1, 2\nmodel: {}\n")
    result = run_cli("train", "--config", tmp_path / "c.yaml")
    assert_user_error(result, "is not valid YAML", "line 4, column 6")
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_path_is_only_ever_a_path_and_a_broken_link_is_an_error(tmp_path, monkeypatch):
    """Issue 40: ``--config ./cnn`` took the shipped cnn (``Path`` drops the ``./``); a dangling link cnn.yaml in
    the current folder fell back to the shipped one. A bare name (no ``/``) names a shipped config; a path is a
    file, suggested with .yaml when that is what exists."""
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--config", "cnn", "--print-config").exit_code == 0
    assert_user_error(run_cli("train", "--config", "./cnn", "--print-config"), "config file not found: ./cnn")
    (tmp_path / "mine.yaml").write_text("train:\n  epochs: 2\n")
    assert_user_error(run_cli("train", "--config", "./mine", "--print-config"), "did you mean mine.yaml?")
    (tmp_path / "cnn.yaml").symlink_to(tmp_path / "gone.yaml")
    result = run_cli("train", "--config", "cnn.yaml", "--print-config")
    assert_user_error(result, "cnn.yaml is a symbolic link to nothing")
    assert result.exit_code == 2


@pytest.mark.parametrize("args", [["configs", "show", "nosuch"], ["serve", "--cors", "bad origin"],
                                  ["predict", "--min-confidence", "nan", "x.png"],
                                  ["prepare", "--timeout", "nan"]])
def test_usage_errors_exit_2(args):
    result = run_cli(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1, result.output


def test_help_texts_name_the_data_sets_and_models_of_the_catalogue_and_registry():
    """A data set added to datasets.CATALOG (and a network to models/registry.py) is offered and named by the
    config's help, its checks and the commands' help, with no text written by hand (docs/extending.md)."""
    code = '''
import dataclasses
from click.testing import CliRunner
from mnist_kit import datasets
from mnist_kit.models import registry
datasets.CATALOG["kmnist"] = dataclasses.replace(datasets.CATALOG["mnist"], name="kmnist", title="Kuzushiji-MNIST",
                                                 noun="characters", mirrored="a mirrored character is another")
datasets.IDX = (*datasets.IDX, "kmnist")
registry.MODELS["tiny"] = "mnist_kit.models.networks:Linear"
from mnist_kit import config
from mnist_kit.cli import cli
print(config.SCHEMA["data"]["name"].help)
print(config.SCHEMA["augment"]["apply"].help)
print("tiny" in config.SCHEMA["model"]["name"].choices, config.load(None, ["model.name=tiny"]).model.name)
try:
    config.load(None, ["data.name=kmnist", "augment.flip=0.5"])
except Exception as e:
    print(e)
print(CliRunner().invoke(cli, ["prepare", "--help"], terminal_width=200).output)
'''
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dataset to train on: mnist, fashion-mnist, kmnist, or image_folder" in out
    assert "auto = on MNIST digits (data.name mnist) or Kuzushiji-MNIST characters (data.name kmnist) only" in out
    assert "True tiny" in out
    assert "augment.flip is 0.5 on characters (data.name kmnist): a mirrored character is another" in out
    assert "Get, verify and cache a data set (MNIST, Fashion-MNIST or Kuzushiji-MNIST)" in out
    assert "[mnist|fashion-mnist|kmnist]" in out
