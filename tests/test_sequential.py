"""The plugin's SASRec/GRU4Rec: loss family, all-position training, negative sampling."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.gru4rec import GRU4Rec as RecBoleGRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

import recbole_llm.models.sequential.length_passes as length_passes_module
import recbole_llm.registry as registry
from recbole_llm.config import Config
from recbole_llm.data.split import load_split
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation import trainer as trainer_module
from recbole_llm.evaluation.passes import passes_loss
from recbole_llm.losses import LOSSES
from recbole_llm.models.sequential.gru4rec import GRU4Rec
from recbole_llm.models.sequential.next_item import window_rows
from recbole_llm.models.sequential.sasrec import SASRec
from recbole_llm.quick_start import train


@pytest.fixture(autouse=True)
def plugin_models(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    registry.register_model(SASRec, "PluginSASRec")
    registry.register_model(GRU4Rec, "PluginGRU4Rec")


def test_plugin_versions_are_the_default_sasrec_and_gru4rec():
    assert registry.get_model("SASRec") is SASRec and registry.get_model("GRU4Rec") is GRU4Rec


def build(name, tiny, **overrides):
    config = Config(
        name, "tiny", config_dict={**tiny, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, **overrides}
    )
    split = load_split(config)
    return config.model_class(config, split.train._dataset), split


@pytest.mark.parametrize("name", ["PluginSASRec", "PluginGRU4Rec"])
def test_all_position_and_per_prefix_training_optimise_the_same_loss(tiny, name):
    model, _ = build(name, tiny, dropout_prob=0.0)
    model.eval()
    a, b, c = 3, 7, 5
    pad = [0] * 3
    one_sequence = Interaction(
        {
            "item_id_list": torch.tensor([[a, b, *pad]]),
            "item_length": torch.tensor([2]),
            "item_id": torch.tensor([c]),
        }
    )
    prefixes = Interaction(
        {
            "item_id_list": torch.tensor([[a, 0, *pad], [a, b, *pad]]),
            "item_length": torch.tensor([1, 2]),
            "item_id": torch.tensor([b, c]),
        }
    )
    model.all_positions = True
    all_positions = model.calculate_loss(one_sequence)
    model.all_positions = False
    per_prefix = model.calculate_loss(prefixes)
    assert all_positions.item() == pytest.approx(per_prefix.item(), rel=1e-5)


def all_position_targets(rows) -> dict[int, list[int]]:
    """Per user, the targets all-position training predicts from the given rows, in order."""
    out: dict[int, list[int]] = {}
    columns = ("item_id_list", "item_length", "item_id", "user_id")
    for seq, length, target, user in zip(*(rows[c].tolist() for c in columns)):
        out.setdefault(user, []).extend([*seq[1:length], target])
    return out


def test_all_position_windows_cover_every_training_target_once(tiny):
    per_prefix = train("PluginSASRec", "tiny", config_dict={**tiny, "all_positions": False}, saved=False)
    prefixes = per_prefix.split.train._dataset.inter_feat
    # RecBole's per-prefix rows: one per training target (8 training items a user: 7 targets).
    expected: dict[int, list[int]] = {}
    for user, target in zip(prefixes["user_id"].tolist(), prefixes["item_id"].tolist()):
        expected.setdefault(user, []).append(target)
    trained = train("PluginSASRec", "tiny", config_dict=tiny, saved=False)
    rows = trained.split.train._dataset.inter_feat
    assert len(rows) == 2 * 12, "windows of MAX_ITEM_LIST_LENGTH=5 over 7 targets: 2 rows a user"
    got = all_position_targets(rows)
    assert {u: sorted(t) for u, t in got.items()} == {u: sorted(t) for u, t in expected.items()}


def test_last_window_reads_each_users_most_recent_items_only(tiny):
    trained = train("PluginSASRec", "tiny", config_dict={**tiny, "train_window": "last"}, saved=False)
    rows = trained.split.train._dataset.inter_feat
    assert len(rows) == 12 == len(set(rows["user_id"].tolist()))
    assert (rows["item_length"] == 5).all(), "each user's longest prefix (MAX_ITEM_LIST_LENGTH=5)"


def test_window_rows_on_hand_built_users():
    uids = np.array([1] * 7 + [2] * 2 + [3])
    assert window_rows(uids, 3).tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 1, 1]
    assert window_rows(uids, 3, last_only=True).tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", ["PluginSASRec", "PluginGRU4Rec"])
def test_every_loss_trains_to_a_finite_loss(tiny, name, loss):
    trained = train(
        name, "tiny", config_dict={**tiny, "loss_type": loss, "num_negatives": 4 if loss != "CE" else None}
    )
    assert trained.model.loss_type == loss
    losses = list(trained.trainer.train_loss_dict.values())
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)


def test_invalid_loss_settings_fail_clearly(tiny):
    with pytest.raises(RecBoleLLMError, match="needs num_negatives >= 1"):
        build("PluginSASRec", tiny, loss_type="BPR", num_negatives=0)
    with pytest.raises(RecBoleLLMError, match="Did you mean: SCE"):
        build("PluginSASRec", tiny, loss_type="SEC")
    with pytest.raises(RecBoleLLMError, match="train_window must be one of all, last"):
        build("PluginSASRec", tiny, train_window="first")
    model, _ = build("PluginSASRec", tiny, loss_type="SCE")
    assert model.num_negatives == 100, "each loss has its YAML default"


def test_excluded_negatives_avoid_target_and_history(tiny):
    model, _ = build("PluginSASRec", tiny, loss_type="SCE", num_negatives=30, negative_exclude="history")
    targets = torch.tensor([4, 9])
    history = torch.tensor([[1, 2, 3, 0, 0], [5, 6, 7, 8, 0]])
    negatives = model._sample(targets, history)
    assert negatives.shape == (2, 30)
    for row, target, seen in zip(negatives, targets, history):
        assert target not in row and not set(row.tolist()) & set(seen.tolist())


def test_negative_sampling_is_seeded(tiny):
    first, _ = build("PluginSASRec", tiny, loss_type="SCE", num_negatives=8)
    second, _ = build("PluginSASRec", tiny, loss_type="SCE", num_negatives=8)
    targets, history = torch.tensor([4]), torch.zeros(1, 5, dtype=torch.long)
    assert torch.equal(first._sample(targets, history), second._sample(targets, history))


@pytest.mark.parametrize("sharing", ["sequence", "batch"])
def test_shared_negatives_score_as_a_per_position_loop_does(tiny, sharing):
    model, _ = build("PluginSASRec", tiny, loss_type="SCE", num_negatives=6, negative_sharing=sharing)
    model.eval()
    item_seq = torch.tensor([[3, 7, 5, 0, 0], [2, 4, 6, 8, 1]])
    targets = torch.tensor([[7, 5, 9, 0, 0], [4, 6, 8, 1, 3]])
    valid = targets > 0
    states = model.sequence_states(item_seq)
    replay = torch.Generator().manual_seed(model.generator.initial_seed())
    replay.set_state(model.generator.get_state())
    scores = model.negative_scores(states, valid, targets[valid], item_seq)
    shape = (2, 6) if sharing == "sequence" else (6,)
    drawn = torch.randint(1, model.n_items, shape, generator=replay)
    expected, weight = [], model.item_embedding.weight
    for row in range(2):
        for position in range(5):
            if targets[row, position]:
                ids = drawn[row] if sharing == "sequence" else drawn
                expected.append([float(states[row, position] @ weight[i]) for i in ids.tolist()])
    assert scores.shape == (int(valid.sum()), 6)
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)


def test_shared_negatives_that_hit_a_target_drop_out_there(tiny):
    model, _ = build(
        "PluginSASRec",
        tiny,
        loss_type="SCE",
        num_negatives=200,
        negative_sharing="batch",
        negative_exclude="positive",
    )
    item_seq = torch.tensor([[3, 7, 5, 0, 0]])
    targets = torch.tensor([[7, 5, 9, 0, 0]])
    replay = torch.Generator()
    replay.set_state(model.generator.get_state())
    drawn = torch.randint(1, model.n_items, (200,), generator=replay)
    scores = model.negative_scores(
        model.sequence_states(item_seq), targets > 0, torch.tensor([7, 5, 9]), item_seq
    )
    hits = drawn.unsqueeze(0) == torch.tensor([[7], [5], [9]])
    assert hits.any(), "200 draws over a tiny catalogue hit some target"
    assert torch.equal(torch.isinf(scores), hits) and torch.isfinite(scores[~hits]).all()
    loss = model.next_item_loss(model.sequence_states(item_seq), targets, item_seq)
    assert torch.isfinite(loss).all()


def test_shared_negatives_refuse_history_exclusion_and_train(tiny):
    with pytest.raises(RecBoleLLMError, match="negative_exclude=history draws negatives per position"):
        build("PluginSASRec", tiny, loss_type="SCE", negative_sharing="batch", negative_exclude="history")
    for sharing in ("sequence", "batch"):
        trained = train(
            "PluginSASRec",
            "tiny",
            config_dict={**tiny, "loss_type": "NCE", "num_negatives": 4, "negative_sharing": sharing},
        )
        assert all(np.isfinite(v) for v in trained.trainer.train_loss_dict.values())


def test_fused_sasrec_states_and_gradients_equal_recboles_layers_where_items_are(tiny):
    model, _ = build("PluginSASRec", tiny, n_layers=2, n_heads=2)
    item_seq = torch.tensor([[3, 7, 5, 0, 0], [2, 4, 6, 8, 1], [9, 0, 0, 0, 0]])
    valid = item_seq > 0

    def recbole_states():  # RecBole's SASRec.forward up to the last layer, every position
        positions = torch.arange(5).unsqueeze(0).expand_as(item_seq)
        hidden = model.dropout(
            model.LayerNorm(model.item_embedding(item_seq) + model.position_embedding(positions))
        )
        return model.trm_encoder(hidden, model.get_attention_mask(item_seq), output_all_encoded_layers=True)[
            -1
        ]

    model.train()  # dropout probabilities are 0 here: train mode takes the training code path
    grads = []
    for states in (model.sequence_states(item_seq), recbole_states()):
        model.zero_grad()
        (states[valid] ** 2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]["states"] = states[valid].detach()
    fused, reference = grads
    assert fused.keys() == reference.keys()
    for name in reference:
        assert torch.allclose(fused[name], reference[name], atol=1e-5), name


@pytest.mark.parametrize("n_layers,eval_tokens", [(1, 10_000), (2, 10_000), (2, 10)])
def test_sasrec_forward_runs_its_last_layer_at_the_last_item_only_and_equals_recboles(
    tiny, monkeypatch, n_layers, eval_tokens
):
    monkeypatch.setattr(length_passes_module, "PASS_TOKENS", eval_tokens)  # 10: lengths 1 and 3, then 5
    model, _ = build("PluginSASRec", tiny, n_layers=n_layers, n_heads=2)
    model.eval()
    item_seq = torch.tensor([[3, 7, 5, 0, 0], [2, 4, 6, 8, 1], [9, 0, 0, 0, 0]])
    lengths = (item_seq > 0).sum(1)
    with torch.no_grad():
        states = RecBoleSASRec.forward(model, item_seq, lengths)  # RecBole's own layers
        assert torch.allclose(model.forward(item_seq, lengths), states, atol=1e-5)


@pytest.mark.parametrize(
    "name,recbole_forward", [("PluginSASRec", RecBoleSASRec), ("PluginGRU4Rec", RecBoleGRU4Rec)]
)
def test_padding_past_the_longest_sequence_changes_neither_states_nor_loss(tiny, name, recbole_forward):
    model, _ = build(name, tiny, loss_type="CE")
    model.eval()
    item_seq = torch.tensor([[3, 7, 5, 0, 0], [2, 4, 0, 0, 0], [9, 0, 0, 0, 0]])  # longest: 3 of 5
    lengths, targets = (item_seq > 0).sum(1), torch.tensor([2, 6, 8])
    with torch.no_grad():
        states = recbole_forward.forward(model, item_seq, lengths)  # RecBole's, over all 5 columns
        assert torch.allclose(model.forward(item_seq, lengths), states, atol=1e-5)
        padded = torch.nn.functional.pad(item_seq, (0, 4))  # 9 columns
        assert torch.allclose(model.forward(padded, lengths), states, atol=1e-5)
        losses = [
            model.calculate_loss(Interaction({"item_id_list": s, "item_length": lengths, "item_id": targets}))
            for s in (item_seq, padded, item_seq[:, :3])
        ]
    assert losses[0].item() == pytest.approx(losses[1].item()) == pytest.approx(losses[2].item())


@pytest.mark.parametrize("all_positions", [True, False])
def test_a_batch_in_passes_has_the_whole_batchs_loss_and_gradients(tiny, monkeypatch, all_positions):
    model, _ = build("PluginSASRec", tiny, all_positions=all_positions)
    model.train()  # dropout probabilities are 0 here: passes and the whole batch see the same function
    batch = Interaction(
        {  # 11 targets in all-position training, 4 otherwise
            "item_id_list": torch.tensor(
                [[3, 7, 5, 0, 0], [2, 4, 6, 8, 1], [9, 0, 0, 0, 0], [4, 4, 0, 0, 0]]
            ),
            "item_length": torch.tensor([3, 5, 1, 2]),
            "item_id": torch.tensor([2, 3, 5, 6]),
        }
    )
    model.zero_grad()
    whole = model.calculate_loss(batch)
    whole.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    monkeypatch.setattr(length_passes_module, "PASS_TOKENS", 15)  # all 4 rows of 5 positions: over 15
    passes = list(model.loss_passes(batch))
    lengths = [part["item_length"].tolist() for part, _ in passes]
    assert len(passes) == 2 and sum(lengths, []) == [1, 2, 3, 5]  # sorted by length, every row once
    shares = [sum(n) / 11 if all_positions else len(n) / 4 for n in lengths]
    assert [weight for _, weight in passes] == pytest.approx(shares)
    model.zero_grad()
    loss = passes_loss(model, batch)
    assert loss.item() == pytest.approx(whole.item(), rel=1e-6)
    loss.backward()  # as the trainer does: adds nothing to the accumulated gradients
    for name, grad in reference.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-6), name


@pytest.mark.parametrize("name,passes", [("PluginSASRec", True), ("PluginGRU4Rec", False)])
def test_cpu_training_runs_sasrec_batches_in_passes(tiny, monkeypatch, name, passes):
    calls = []
    monkeypatch.setattr(trainer_module, "passes_loss", lambda *a: calls.append(1) or passes_loss(*a))
    train(name, "tiny", config_dict={**tiny, "epochs": 1})
    assert bool(calls) == passes
