"""KangSASRec against the reference code's own layout: left padding, torch's MultiheadAttention, 1x1
convolutions, no key mask (or a key-padding mask, as Kang's TensorFlow code)."""

import pytest
import torch
from recbole.data.interaction import Interaction
from torch import nn

import recbole_llm.models.sequential.length_passes as length_passes_module
from recbole_llm.config import Config
from recbole_llm.data.split import load_split
from recbole_llm.evaluation.passes import passes_loss
from recbole_llm.models.sequential.kang_sasrec import KangSASRec
from recbole_llm.quick_start import train
from recbole_llm.registry import get_model


def build(tiny, **overrides):
    config = Config("KangSASRec", "tiny", config_dict={**tiny, "dropout_prob": 0.0, **overrides})
    return KangSASRec(config, load_split(config).train._dataset)


def reference_states(model: KangSASRec, item_seq: torch.Tensor, mask_padding: bool) -> torch.Tensor:
    """The reference forward (SASRec.pytorch as in CE-SCE-LLMRec) on left-padded copies of the rows,
    with `model`'s weights copied into torch's MultiheadAttention and Conv1d layers; returns the
    states of the real items, right-aligned back to `item_seq`'s layout."""
    length, hidden = model.max_seq_length, model.hidden_size
    lengths = (item_seq > 0).sum(1)
    left = torch.zeros(len(item_seq), length, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        left[row, length - n :] = item_seq[row, :n]
    padding = (left == 0).unsqueeze(-1)
    seqs = model.item_embedding(left) * hidden**0.5 + model.position_embedding.weight.unsqueeze(0)
    seqs = seqs.masked_fill(padding, 0.0)
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    for block in model.blocks:
        attention = nn.MultiheadAttention(hidden, model.n_heads, batch_first=True)
        attention.in_proj_weight.data.copy_(block.in_proj.weight)
        attention.in_proj_bias.data.copy_(block.in_proj.bias)
        attention.out_proj.load_state_dict(block.out_proj.state_dict())
        conv1, conv2 = nn.Conv1d(hidden, hidden, 1), nn.Conv1d(hidden, hidden, 1)
        for conv, linear in ((conv1, block.inner), (conv2, block.outer)):
            conv.weight.data.copy_(linear.weight.unsqueeze(-1))
            conv.bias.data.copy_(linear.bias)
        q = block.attention_norm(seqs)
        keys_masked = padding.squeeze(-1) if mask_padding else None
        seqs = (
            attention(q, seqs, seqs, attn_mask=causal, key_padding_mask=keys_masked, need_weights=False)[0]
            + seqs
        )
        seqs = block.forward_norm(seqs)
        seqs = conv2(torch.relu(conv1(seqs.transpose(1, 2)))).transpose(1, 2) + seqs
        seqs = seqs.masked_fill(padding, 0.0)
    features = model.last_norm(seqs)
    out = torch.zeros(len(item_seq), item_seq.size(1), hidden)
    for row, n in enumerate(lengths.tolist()):
        out[row, :n] = features[row, length - n :]
    return out


ROWS = torch.tensor([[3, 7, 5, 0, 0], [2, 4, 6, 8, 1], [9, 0, 0, 0, 0], [11, 12, 0, 0, 0]])


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("attend", [True, False])
def test_states_equal_the_reference_forward_on_left_padded_rows(tiny, heads, attend):
    model = build(tiny, n_heads=heads, attend_to_padding=attend).eval()
    with torch.no_grad():
        for block in model.blocks:  # biases away from zero, so padding keys and values matter
            block.in_proj.bias.normal_(0, 1.0)
        got = model.sequence_states(ROWS)
        expected = reference_states(model, ROWS, mask_padding=not attend)
    real = ROWS > 0
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_attending_to_padding_changes_states_of_short_sequences_only(tiny):
    model = build(tiny).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.in_proj.bias.normal_(0, 1.0)
        attending = model.sequence_states(ROWS)
        model.attend_to_padding = False
        masked = model.sequence_states(ROWS)
    full, short = ROWS[:, -1] > 0, (ROWS > 0) & (ROWS[:, -1:] == 0)
    assert torch.allclose(attending[full], masked[full], atol=1e-6)  # MAX_ITEM_LIST_LENGTH=5: no slots
    assert not torch.allclose(attending[short], masked[short], atol=1e-3)


def test_positions_count_from_the_end(tiny):
    """Trimming or extending right padding changes no state: a sequence's own items decide them."""
    model = build(tiny).eval()
    with torch.no_grad():
        whole = model.sequence_states(ROWS)
        cut = model.sequence_states(ROWS[[0, 2, 3], :3])
    assert torch.allclose(whole[[0, 2, 3], :3], cut, atol=1e-6)


def test_scoring_and_passes_match_the_whole_batch(tiny, monkeypatch):
    model = build(tiny).eval()
    lengths = (ROWS > 0).sum(1)
    batch = Interaction({"item_id_list": ROWS, "item_length": lengths, "item_id": torch.tensor([2, 3, 5, 6])})
    with torch.no_grad():
        states = model.sequence_states(ROWS)[torch.arange(4), lengths - 1]
        monkeypatch.setattr(length_passes_module, "PASS_TOKENS", 6)
        scores = model.full_sort_predict(batch)
        assert torch.allclose(scores, states @ model.item_embedding.weight.T, atol=1e-5)
        assert torch.allclose(model.predict(batch), scores[torch.arange(4), batch["item_id"]], atol=1e-5)
    model.train()
    whole = model.calculate_loss(batch)
    model.zero_grad()
    whole.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert passes_loss(model, batch).item() == pytest.approx(whole.item(), rel=1e-6)
    for name, grad in reference.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-6), name


def test_initialisation_follows_the_reference(tiny):
    model = build(tiny)
    assert get_model("KangSASRec") is KangSASRec
    assert model.item_embedding.weight[0].abs().sum() == 0  # padding scores 0, as RecBole's
    assert all(b.in_proj.bias.abs().sum() == 0 and b.out_proj.bias.abs().sum() == 0 for b in model.blocks)
    n_items, hidden = model.item_embedding.weight.shape
    xavier_std = (2 / (n_items + hidden)) ** 0.5
    assert model.item_embedding.weight[1:].std().item() == pytest.approx(xavier_std, rel=0.15)


def test_trains_and_ranks_end_to_end(tiny):
    trained = train(
        "KangSASRec", "tiny", config_dict={**tiny, "loss_type": "SCE", "num_negatives": 4, "epochs": 2}
    )
    losses = list(trained.trainer.train_loss_dict.values())
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert trained.epochs_run == 2 and 0.0 <= trained.best_valid["ndcg@10"] <= 1.0


def test_rejects_heads_that_do_not_divide_the_hidden_size(tiny):
    with pytest.raises(ValueError, match="divisible by n_heads"):
        build(tiny, hidden_size=64, n_heads=3)
