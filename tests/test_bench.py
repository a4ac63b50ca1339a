"""A CPU dry run of `make bench`'s code paths at tiny sizes (the numbers need a GPU)."""
import reprolib.bench as bench


def test_bench_code_paths_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "NS_SHAPES", [(16, 16), (16, 48)])
    monkeypatch.setattr(bench, "GPTS", {"tiny": dict(n_layer=1, d_model=32, n_head=2)})
    rate = bench.gemm_tflops(n=64)
    res = dict(device="cpu", versions={}, gemm_tflops=rate,
               newton_schulz=bench.bench_newton_schulz(rate, batch=3),
               optimizer_step=bench.bench_optimizer_step(1.0),
               train_step=bench.bench_train_step(batch=2, seq_len=16))
    assert [r["shape"] for r in res["newton_schulz"]] == ["16x16", "16x48"]
    assert {r["optimizer"] for r in res["optimizer_step"]} == {"adamw", "torch_muon", "muon_plain", "muon", "normuon"}
    assert all(r["tokens_per_s"] > 0 for r in res["train_step"])
    assert bench.ns_flops(768, 3072) == bench.ns_flops(3072, 768) == 5 * (4 * 768 ** 2 * 3072 + 2 * 768 ** 3)
    assert "| 16x48 | 3 |" in bench.markdown(res)


def test_training_loop_table_on_cpu(monkeypatch):
    """Table 4's paths run (reference loop, its CUDA-graph capture, train_lm, batched seeds), count tokens
    and MFU consistently,
    and the batched model's losses are each seed's own (vmap over stacked weights)."""
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "LOOP_GPTS", {"tiny": (dict(n_layer=1, d_model=32, n_head=2), 4)})
    rows = bench.bench_training_loop(rate_tflops=1.0, steps=3, seeds=2)
    assert [r["path"] for r in rows] == ["reference loop", "reference step, CUDA graph", "train_lm eager",
                                         "2 seeds batched"]
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] and r["step_ms"] > 0
    assert rows[-1]["speedup"] > 0 and rows[1]["speedup"] > 0
    model = bench._build_gpt(dict(n_layer=1, d_model=32, n_head=2), seq_len=16)
    n_matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2 and "tok_emb" not in n)
    assert bench.train_flops_per_token(model) == 6 * n_matmul + 6 * 1 * 16 * 32
    assert "| tiny | 2 seeds batched |" in bench.markdown(dict(device="cpu", versions={}, gemm_tflops=1.0,
                                                               newton_schulz=[], optimizer_step=[], train_step=[],
                                                               training_loop=rows))


def test_a_failed_capture_is_a_row_not_a_crash(monkeypatch):
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "LOOP_GPTS", {"tiny": (dict(n_layer=1, d_model=32, n_head=2), 4)})

    def fails(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")
    monkeypatch.setattr(bench, "_graphed_loop", fails)
    rows = bench.bench_training_loop(rate_tflops=1.0, steps=2, seeds=2)
    assert rows[1]["error"] == "RuntimeError: operation not permitted when stream is capturing"
    table = bench.markdown(dict(device="cpu", versions={}, gemm_tflops=1.0, newton_schulz=[], optimizer_step=[],
                                train_step=[], training_loop=rows))
    assert "failed: RuntimeError" in table and "| tiny | 2 seeds batched |" in table


def test_batched_seeds_train_each_seed_as_alone(monkeypatch):
    """One vmapped step over stacked weights equals each model's own step (fp32, CPU)."""
    import copy
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    import torch
    from torch.func import functional_call, stack_module_state, vmap
    models = [bench._build_gpt(dict(n_layer=1, d_model=32, n_head=2), seq_len=16, seed=s) for s in range(2)]
    alone = copy.deepcopy(models)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randint(0, 256, (2, 3, 17))
    losses = vmap(lambda p, b, xx, yy: functional_call(base, (p, b), (xx, yy))[1])(params, buffers, x[..., :-1], x[..., 1:])
    losses.sum().backward()
    for i, m in enumerate(alone):
        loss = m(x[i, :, :-1], x[i, :, 1:])[1]
        loss.backward()
        assert torch.allclose(losses[i], loss, atol=1e-6)
        assert torch.allclose(params["lm_head.weight"].grad[i], m.lm_head.weight.grad, atol=1e-6)
