"""Fine-tuning on your own data (`train.init_from`): a tiny trained system continues on a folder of new
images, starting from its weights (not a fresh initialisation) and lowering its loss on them; a recipe whose
model differs from the base is refused in one line."""

import json

import pytest
import torch

import umm
from umm.config import ConfigError
from umm.data.folder import FolderDataset
from umm.data.grid import save_grid
from umm.data.shapes import ShapesWorld


def _folder(root, n=24):
    """n ShapesWorld L2 scenes (the base trained on L1) as a user folder: PNG files + captions.jsonl."""
    root.mkdir()
    world = ShapesWorld("train", canvas=16, level="L2", seed=7)
    rows = []
    for i in range(n):
        sample = world[i]
        save_grid(sample["image"][None], root / f"img{i}.png", nrow=1, upscale=1)
        rows.append(json.dumps({"file": f"img{i}.png", "caption": sample["caption"]}))
    (root / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return root


def _t2i_loss(pipe, folder) -> float:
    """Mean t2i loss over the folder with a fixed noise draw (the same for every model compared)."""
    data = FolderDataset(folder, canvas=16)
    samples = [data[i] for i in range(len(data))]
    generator = torch.Generator().manual_seed(0)
    batch = pipe.system.collate(samples, "t2i", generator)
    with torch.no_grad():
        losses = pipe.system.losses(pipe.model, batch, torch.Generator().manual_seed(1))
    return float(sum(v for k, v in losses.items() if k.endswith("_loss")))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    run = umm.train("test_transfusion", tmp / "base", train={"steps": 40}, data={"level": "L1"},
                    tasks=[{"name": "t2i", "batch_size": 8}])
    return run / "model", _folder(tmp / "mine")


def test_fine_tuning_starts_from_the_base_and_lowers_its_loss_on_the_new_images(base, tmp_path):
    model_dir, folder = base
    own_data = {"name": "folder", "path": str(folder), "canvas": 16}
    tasks = [{"name": "t2i", "batch_size": 8}]
    tuned = umm.train("test_transfusion", tmp_path / "tuned", train={"steps": 30, "init_from": str(model_dir)},
                      data=own_data, tasks=tasks)
    fresh = umm.train("test_transfusion", tmp_path / "fresh", train={"steps": 30}, data=own_data, tasks=tasks)
    before = _t2i_loss(umm.load(model_dir), folder)
    after = _t2i_loss(umm.load(tuned / "model"), folder)
    assert after < 0.9 * before, (before, after)
    # the first logged loss of the fine-tune is the base's, well below a fresh model's first loss (9.7 vs 13.5 here)
    first = lambda run: float(next(r for r in (tmp_path / run / "train.csv").read_text().splitlines()[1:]).split(",")[1])  # noqa: E731
    assert first("tuned") < 0.85 * first("fresh"), (first("tuned"), first("fresh"))
    assert (tuned / "tokenizer" / "tokenizer.json").read_text() == (model_dir / "tokenizer.json").read_text()


def test_a_model_that_differs_from_the_base_is_refused_in_one_line(base, tmp_path):
    model_dir, _ = base
    with pytest.raises(ConfigError, match=r"the model differs from the base in .*use the base's model"):
        umm.train("test_transfusion", tmp_path / "x", train={"steps": 2, "init_from": str(model_dir)},
                  model_args={"transformer": {"depth": 1}})
    with pytest.raises(ConfigError, match="data.canvas=32 but the base model reads 16 px"):
        umm.train("test_transfusion", tmp_path / "y", train={"steps": 2, "init_from": str(model_dir)},
                  data={"canvas": 32})
    with pytest.raises(umm.UmmError, match="is not a trained umm system"):
        umm.train("test_transfusion", tmp_path / "z", train={"steps": 2, "init_from": str(tmp_path)})


def test_lora_trains_an_adapter_and_leaves_the_base_untouched(base, tmp_path):
    """``train.lora_rank`` (LoRA through peft): the loss on the new images falls, the base model's files are
    byte-identical afterwards, the run saves only the adapter (a fraction of the weights) with a pointer to
    the base, and ``umm.load`` merges it into a plain model whose weights differ from the base's."""
    import hashlib

    pytest.importorskip("peft")
    model_dir, folder = base
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in model_dir.iterdir() if p.is_file()}  # noqa: E731
    before_files = digest()
    tuned = umm.train("test_transfusion", tmp_path / "lora", tasks=[{"name": "t2i", "batch_size": 8}],
                      train={"steps": 30, "init_from": str(model_dir), "lora_rank": 4, "lora_alpha": 8.0, "lr": 1e-2},
                      data={"name": "folder", "path": str(folder), "canvas": 16})
    assert digest() == before_files
    saved = tuned / "model"
    assert not (saved / "model.safetensors").exists() and (saved / "adapter.safetensors").is_file()
    meta = json.loads((saved / "adapter.json").read_text())
    assert meta["rank"] == 4 and meta["base"] == str(model_dir.resolve()) and meta["targets"]
    assert (saved / "adapter.safetensors").stat().st_size < 0.5 * (model_dir / "model.safetensors").stat().st_size
    base_pipe, tuned_pipe = umm.load(model_dir), umm.load(saved)
    assert not any("lora" in k for k in tuned_pipe.model.state_dict())  # merged into plain layers
    base_state, tuned_state = base_pipe.model.state_dict(), tuned_pipe.model.state_dict()
    assert set(base_state) == set(tuned_state)
    changed = [k for k in base_state if not torch.equal(base_state[k], tuned_state[k])]
    assert changed and all(k.endswith("weight") for k in changed)  # only the adapted linear weights moved
    assert torch.equal(base_state["token_embed.weight"], tuned_state["token_embed.weight"])
    assert _t2i_loss(tuned_pipe, folder) < 0.95 * _t2i_loss(base_pipe, folder)
    # an adapter whose base has gone says so in one line instead of loading something else
    import shutil

    orphan = tmp_path / "orphan"
    shutil.copytree(saved, orphan)
    (orphan / "adapter.json").write_text(json.dumps({**meta, "base": str(tmp_path / "gone")}))
    with pytest.raises(umm.UmmError, match="LoRA adapter of .*gone.*which no longer exists"):
        umm.load(orphan)


def test_lora_needs_a_base(tmp_path):
    with pytest.raises(ConfigError, match="train.lora_rank' needs train.init_from"):
        umm.train("test_transfusion", tmp_path / "x", train={"steps": 2, "lora_rank": 4})
