"""The generated advising task (reprolib.data.advising) and greedy decoding (reprolib.models.generate)."""
import re

import torch

from reprolib.data import ATTRIBUTES, advising_data, answer_line, fact_table, prompt
from reprolib.models import GPT, GPTConfig, greedy_complete


def test_fact_table_is_deterministic_and_complete():
    a, b = fact_table(12, seed=3), fact_table(12, seed=3)
    assert a == b and len(a) == 12 and a != fact_table(12, seed=4)
    for facts in a.values():
        assert set(facts) == set(ATTRIBUTES)
        assert re.fullmatch(r"[A-Z]-[1-9] permit", facts["visa"]) and re.fullmatch(r"\d{4} euros", facts["tuition"])


def test_splits_are_disjoint_and_test_facts_only_in_pretraining():
    d = advising_data(n_countries=16, n_select=2, n_test=4, n_dialogues=300, max_chars=60_000, seed=1)
    c = d.countries
    assert not (set(c["train"]) & set(c["test"])) and not (set(c["select"]) & set(c["test"]))
    assert len(c["test"]) == 4 and len(c["select"]) == 2 and len(c["train"]) == 10
    train_text, test_text = d.decode(d.finetune["train"]), d.decode(d.finetune["test"])
    pre = d.decode(d.pretrain.train)
    for country in c["test"]:
        assert country not in train_text and country in test_text and country in pre
    # every dialogue is markdown with answer lines of the table's values
    for block in train_text.strip().split("\n\n"):
        q, a = block.split("### Answer\n")
        assert q.startswith("### Question\n")
        country = next(x for x in c["train"] if x in q)
        for line in a.splitlines():
            label, value = re.fullmatch(r"\*\*(.+?):\*\* (.+)", line).groups()
            attr = next(k for k in ATTRIBUTES if answer_line(k, "") == f"**{label}:** ")
            assert d.table[country][attr] == value
    # the fact sentences make up about fact_share of the pre-training characters, the format is new
    assert "### Question" not in pre and "**Visa:**" not in pre and "## ACT" in pre
    share = sum(len(s) for s in pre.splitlines() if any(x in s for x in d.table)) / len(pre)
    assert 0.07 < share < 0.13
    items = d.eval_items("test")
    assert len(items) == 16 and items[0][0] == prompt(c["test"][0], "visa")


def test_wrong_fraction_corrupts_only_training_answers():
    d = advising_data(n_countries=16, n_select=2, n_test=4, n_dialogues=400, max_chars=20_000, wrong_frac=0.3, seed=2)
    assert 80 <= d.info["wrong_dialogues"] <= 160
    wrong = 0
    for block in d.decode(d.finetune["train"]).strip().split("\n\n"):
        q, a = block.split("### Answer\n")
        country = next(x for x in d.countries["train"] if x in q)
        wrong += any(line not in {answer_line(k, v) for k, v in d.table[country].items()} for line in a.splitlines())
    assert wrong == d.info["wrong_dialogues"]
    test_text = d.decode(d.finetune["test"])
    for block in test_text.strip().split("\n\n"):
        country = next(x for x in d.countries["test"] if x in block)
        assert all(line in {answer_line(k, v) for k, v in d.table[country].items()}
                   for line in block.split("### Answer\n")[1].splitlines())


def test_greedy_complete_matches_one_prompt_at_a_time():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, seq_len=16, n_layer=1, d_model=16, n_head=2)).eval()
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 8]), torch.tensor([9])]
    batched = greedy_complete(model, prompts, max_new=6, pad_id=0)
    for p, out in zip(prompts, batched):
        idx = torch.cat([torch.zeros(5 - len(p), dtype=torch.long), p])[None]   # the same left padding
        ref = []
        for _ in range(6):
            nxt = int(model(idx[:, -16:])[0][0, -1].argmax())
            ref.append(nxt)
            idx = torch.cat([idx, torch.tensor([[nxt]])], 1)
        assert out == ref
    stop = batched[0][2]
    cut = greedy_complete(model, prompts[:1], max_new=6, pad_id=0, stop_id=stop)[0]
    assert cut == batched[0][:batched[0].index(stop)]
