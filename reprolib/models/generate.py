"""Greedy decoding for the collection's language models (forward(idx) -> (logits, loss))."""
import torch
from torch import nn


@torch.no_grad()
def greedy_complete(model: nn.Module, prompts: list[torch.Tensor], max_new: int, pad_id: int,
                    stop_id: int | None = None, context: int | None = None) -> list[list[int]]:
    """Continue each prompt (1-D token ids) greedily, all in one batch: prompts are left-padded with
    `pad_id` to one length (pick a token the model sees between documents, e.g. a newline), and each
    step feeds the last `context` tokens (default model.cfg.seq_len). Returns the new ids of each
    prompt, cut before its first `stop_id`."""
    context = context or model.cfg.seq_len
    width = max(len(p) for p in prompts)
    idx = torch.stack([torch.cat([p.new_full((width - len(p),), pad_id), p]) for p in prompts])
    out = []
    for _ in range(max_new):
        logits = model(idx[:, -context:])[0][:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        idx = torch.cat([idx, nxt], 1)
    new = torch.cat(out, 1).tolist() if out else [[] for _ in prompts]
    return [row[:row.index(stop_id)] if stop_id is not None and stop_id in row else row for row in new]
