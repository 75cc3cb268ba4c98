"""Several processes and machines: each rank's share of a batch, the checks around resuming and starting, and two
processes started as two nodes on 127.0.0.1 (gloo, CPU) that train to the weights of one process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import SMALL_TEXT, assert_one_line_error, one_thread_env, run_cli
from wordformer.batches import PairBatches, TextBatches
from wordformer.config import DataConfig, TrainConfig
from wordformer.data import WordDataModule, prepare_corpus
from wordformer.distributed import check_cluster, check_same_global_batch, is_rank_zero
from wordformer.errors import WordformerError


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("".join(f"line {i} of the corpus, word{i % 7}.\n" for i in range(300)))
    return prepare_corpus(DataConfig(data=str(path), cache_dir=str(tmp_path / "cache")), block_size=8)


# ---------------------------------------------------------------------------------------------- each rank's data


@pytest.mark.parametrize("sampling", ["random", "epoch"])
def test_ranks_share_one_global_draw_and_no_window_twice(corpus, sampling):
    """Rank r's batch n is its rows of the batch one process with the global batch draws: together they are that
    batch, and (epoch sampling) an epoch still shows every window once over all ranks."""
    one = TextBatches(corpus.train_ids, 8, 6, seed=5, sampling=sampling)
    ranks = [TextBatches(corpus.train_ids, 8, 3, seed=5, sampling=sampling) for _ in range(2)]
    for r, b in enumerate(ranks):
        b.set_ranks(r, 2)
    for n in range(5):
        x, y = one.batch(n)
        parts = [b.batch(n) for b in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        assert not torch.equal(parts[0][0], parts[1][0])  # each rank its own windows
    if sampling == "epoch":
        per_epoch = ranks[0].order.per_epoch
        seen = torch.cat([b.order.items(n)[r * 3:(r + 1) * 3] for n in range(per_epoch) for r, b in enumerate(ranks)])
        assert len(set(seen.tolist())) == len(seen) == per_epoch * 6  # no window twice in an epoch


def test_pair_batches_are_shared_out_the_same_way(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"prompt {i}\tanswer {i}\n" for i in range(40)))
    corpus = prepare_corpus(DataConfig(data=str(path), pairs=True, cache_dir=str(tmp_path / "k")), block_size=16)
    one = PairBatches(corpus.train_pairs, 0, 4, seed=2)
    ranks = [PairBatches(corpus.train_pairs, 0, 2, seed=2) for _ in range(2)]
    for r, b in enumerate(ranks):
        b.set_ranks(r, 2)
    x = one.batch(3)[0]
    halves = [b.batch(3)[0] for b in ranks]
    for k, half in enumerate(halves):  # padding depends on the rows padded together: compare the tokens
        for row_one, row in zip(x[2 * k:2 * k + 2], half):
            assert row_one[row_one != 0].tolist() == row[row != 0].tolist()


def test_the_data_module_takes_its_rank_from_the_trainer(corpus):
    dm = WordDataModule(corpus, 8, 3, seed=1)
    dm.trainer = SimpleNamespace(global_step=0, global_rank=1, world_size=2)
    dm.train_dataloader()
    assert (dm.train_set.rank, dm.train_set.world, dm.train_set.global_batch) == (1, 2, 6)


# ---------------------------------------------------------------------------------------------- checks


def test_rank_zero_follows_every_way_of_starting_processes(monkeypatch):
    for name in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert is_rank_zero()
    for name in ("NODE_RANK", "LOCAL_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.setenv(name, "1")
        assert not is_rank_zero(), name
        monkeypatch.setenv(name, "0")
    assert is_rank_zero()


def test_a_multi_node_run_without_a_main_address_is_refused_in_one_line(monkeypatch, capsys, small_text, tmp_path):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(WordformerError, match="MASTER_ADDR, MASTER_PORT and NODE_RANK"):
        check_cluster(2)
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", "--num-nodes", "2",
                           "--max-steps", "1", "--no-progress")
    assert_one_line_error(code, err, "num_nodes=2", "--num-nodes 1")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("NODE_RANK", "1")
    with pytest.raises(WordformerError, match="NODE_RANK=1 is set but num_nodes=1"):
        check_cluster(1)


def test_resuming_with_another_global_batch_says_which_batch_size_continues_it():
    check_same_global_batch(4, 2, 8, 1, "run/last.ckpt")  # 2 x 4 == 1 x 8
    with pytest.raises(WordformerError, match=r"2 process\(es\) x batch 4 = 8 .* here 1 x 4 = 4; pass --batch-size 8"):
        check_same_global_batch(4, 2, 4, 1, "run/last.ckpt")
    with pytest.raises(WordformerError, match="divides 9"):
        check_same_global_batch(3, 3, 3, 2, "run/last.ckpt")


def test_fsdp_on_a_cpu_is_one_clear_line(capsys, small_text, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "run", "--strategy", "fsdp",
                           "--max-steps", "1", "--no-progress")
    assert_one_line_error(code, err, "fsdp needs CUDA GPUs", "--strategy ddp")
    with pytest.raises(WordformerError, match="strategy='nope'"):
        TrainConfig(strategy="nope")
    with pytest.raises(WordformerError, match="num_nodes=0"):
        TrainConfig(num_nodes=0)


# ---------------------------------------------------------------------------------------------- two nodes on 127.0.0.1

# a constant learning rate (no warm-up, min_lr = lr): a run stopped at step 4 and resumed to 8 then follows the
# schedule of a run that went to 8 at once (a cosine schedule depends on max_steps)
TINY = ["--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--block-size", "8", "--max-steps", "8",
        "--eval-interval", "4", "--eval-batches", "2", "--warmup-steps", "0", "--lr", "3e-3", "--min-lr", "3e-3",
        "--no-progress", "--accelerator", "cpu", "--devices", "1", "--seed", "3"]
CLI = [sys.executable, "-c", "import sys; from wordformer.cli import main; sys.exit(main(sys.argv[1:]))"]
ATOL = 1e-6  # two ranks sum their halves' gradients in another order than one process: float32 rounding only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list, cwd: Path, timeout: float = 300) -> list[tuple[int, str, str]]:
    """Start ``wordformer ARGS`` twice as nodes 0 and 1 of one run, the way one starts machines by hand."""
    port, procs = free_port(), []
    for node in (0, 1):
        env = {**one_thread_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
               "WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def weights(run: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run / name, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= ATOL, worst
    return worst


@pytest.mark.slow
def test_two_nodes_train_like_one_process_and_resume_across_process_counts(tmp_path, capsys):
    env_before = dict(os.environ)
    data = tmp_path / "small.txt"
    data.write_text(SMALL_TEXT)
    common = ["--data", data, *TINY]

    def one(out: Path, *extra) -> None:
        code, _, err = run_cli(capsys, "train", *common, "--out", out, *extra)
        assert code == 0, err

    one(tmp_path / "one", "--batch-size", "8")  # the reference: one process, global batch 8, 8 steps
    one(tmp_path / "one4", "--batch-size", "8", "--max-steps", "4")

    # two nodes, batch 4 each, to step 4: the weights of one process at step 4
    nodes = two_nodes(["train", *common, "--out", tmp_path / "two", "--batch-size", "4", "--max-steps", "4",
                       "--num-nodes", "2", "--strategy", "ddp", "--progress"], tmp_path)
    assert [code for code, _, _ in nodes] == [0, 0], nodes[0][2][-3000:] + nodes[1][2][-3000:]
    assert "steps: 4" in nodes[0][1] and nodes[1][1] == ""  # the report comes once, from rank 0
    assert "training on" in nodes[0][2] and "training on" not in nodes[1][2]
    assert "step 4/4" in nodes[0][2] and "step 4/4" not in nodes[1][2]  # progress lines too (stderr is a pipe)
    rows = (tmp_path / "two" / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and len(rows) == len(set(rows))  # one writer: no row twice
    worst = [assert_same_weights(tmp_path / "two", tmp_path / "one4")]
    shutil.copytree(tmp_path / "two", tmp_path / "two_to_one")
    shutil.copytree(tmp_path / "two", tmp_path / "refused")
    shutil.copytree(tmp_path / "one4", tmp_path / "one_to_two")

    # a two-node run resumed on two nodes continues exactly
    nodes = two_nodes(["train", "--resume", tmp_path / "two", "--max-steps", "8"], tmp_path)
    assert [code for code, _, _ in nodes] == [0, 0], nodes[0][2][-3000:] + nodes[1][2][-3000:]
    worst.append(assert_same_weights(tmp_path / "two", tmp_path / "one"))

    # ... and on one process with the same global batch
    # (--strategy auto: the run saved "ddp", and DDP in this test process would leave its process group and
    # environment behind for the tests that follow)
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "two_to_one", "--max-steps", "8", "--num-nodes", "1",
                           "--strategy", "auto", "--batch-size", "8")
    assert code == 0, err
    worst.append(assert_same_weights(tmp_path / "two_to_one", tmp_path / "one"))

    # a one-process run resumed on two nodes
    nodes = two_nodes(["train", "--resume", tmp_path / "one_to_two", "--max-steps", "8", "--num-nodes", "2",
                       "--strategy", "ddp", "--batch-size", "4"], tmp_path)
    assert [code for code, _, _ in nodes] == [0, 0], nodes[0][2][-3000:] + nodes[1][2][-3000:]
    worst.append(assert_same_weights(tmp_path / "one_to_two", tmp_path / "one"))

    # another global batch is refused in one line that says what continues it
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "refused", "--max-steps", "8", "--num-nodes", "1",
                           "--strategy", "auto")
    assert_one_line_error(code, err, "another global batch", "--batch-size 8")
    own = {"TF_CPP_MIN_LOG_LEVEL"}  # the CLI quiets TensorBoard's TensorFlow on purpose (cli/__init__.py)
    leaked = {k: v for k, v in os.environ.items()
              if env_before.get(k) != v and not k.startswith("PL_") and k not in own}  # PL_: seeds
    assert leaked == {}  # nothing distributed (MASTER_PORT, LOCAL_RANK, ...) leaked into this process
    print(f"largest weight differences: {worst}")
