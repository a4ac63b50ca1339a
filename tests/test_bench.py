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
