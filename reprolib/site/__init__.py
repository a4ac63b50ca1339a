"""The course site: `make site` renders every notebook, with its committed GPU outputs, into a static
HTML site that builds and reads offline (Sphinx + myst-nb, MathJax from a local copy).

    python -m reprolib.site [--out build/site] [--src build/site-src]

The generated source (build/site-src) holds:
    index.md             the results table: paper, verdict, reseed stability, figure thumbnail, page
    syllabus.md          a suggested path through the themes, prerequisites, smoke and GPU times
    themes/<theme>.md    one page per theme, listing its notebooks
    notebooks/...        the notebooks, each with an at-a-glance box first (paper link, verdict,
                         GPU minutes, smoke time on a laptop CPU, the commands that rerun it)
Everything is generated from the notebooks, figures/*/results.json, figures/pending.json and
figures/_smoke/times.json, never written by hand.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import dashboard
from ..run.provenance import repo_root

HERE = Path(__file__).resolve().parent

THEMES = {
    "optimizers": ("Optimizers", "Update rules beyond Adam: orthogonalised and normalised updates (Muon and its "
                   "successors), sign-based and low-precision optimizers, noise, trainable first layers, "
                   "second-order steps and hyperparameters learned during training."),
    "curvature-and-sharpness": ("Curvature and sharpness", "How an optimizer's step meets the loss surface: "
                                "directional sharpness, Hessian-vector products and what they predict; flat "
                                "minima; Hessians aligned across domains."),
    "normalization-and-lipschitz": ("Normalization and Lipschitz control", "Keeping a network's layers in range: "
                                    "spectral reparameterisation, normalisation layers and attention entropy."),
    "quantization-and-precision": ("Quantization and precision", "Training in fewer bits: block-scaled 4-bit "
                                   "formats, stochastic rounding, Hadamard transforms, simulated low-precision "
                                   "matrix products, and which layers can afford them; pruning a model down to one domain."),
    "training-dynamics-and-generalization": ("Training dynamics and generalization", "What training shapes beyond "
                                             "the training loss: warm starts and re-initialisation when data arrive "
                                             "over time, when learning stops, and how far the last-layer features "
                                             "collapse, layer by layer and under regularisation."),
    "low-rank-and-peft": ("Low rank, sparsity and parameter-efficient tuning", "Training and adapting networks "
                          "while changing or storing little: optimizer state kept in a low-rank projection of the "
                          "gradient (GaLore, Fira), low-rank adapters, and sparse subnetworks found by searching "
                          "masks over frozen pretrained weights."),
}

# A suggested path: (stage title, what it teaches, prerequisites, slugs in order)
PATH = [
    ("1. Noise, initialisation and plain SGD",
     "How a deep network escapes a bad start; reading a claim and its regime checks.",
     "Python, PyTorch basics, SGD with momentum.",
     ["gradient_noise_deep_mlp"]),
    ("2. Adaptive and sign-based optimizers",
     "Adam's per-coordinate scaling, Lion's sign update, learning-rate tuning that does not fool itself.",
     "Stage 1; Adam.",
     ["lion_vs_adamw_batch", "stable_spam_4bit"]),
    ("3. Orthogonalised updates",
     "Muon's Newton-Schulz step and its successors; data efficiency at a fixed budget.",
     "Stage 2; singular value decomposition.",
     ["muon_mla_moe_efficiency", "normuon_vs_muon_adamw", "conda_column_normalized_adam",
      "auon_cosh_vs_muon", "sinkgd_stateless_opt"]),
    ("4. Why it works: curvature",
     "Directional sharpness and the second-order Taylor view of one step; where that Taylor view stops (its "
     "radius of convergence); flat minima with and without SAM's second pass; Hessians aligned across domains; "
     "splitting matrices, which say where splitting a Gaussian splat escapes a saddle point.",
     "Stage 3; Hessian-vector products.",
     ["muon_adam_nds_curvature", "softmax_ghosts_step_radius", "saf_trajectory_sharpness",
      "hessian_alignment_cmnist", "steepgs_split_2d_splats"]),
    ("5. Keeping layers in range",
     "Attention entropy collapse and a spectral reparameterisation that prevents it; certified Lipschitz bounds"
     " from weight constraints applied after each optimizer step; a normalisation layer that gives back the "
     "input norm RMSNorm discards; high-norm visual tokens that a pre-norm language model barely updates, and "
     "one LayerNorm that aligns them.",
     "Stage 4; power iteration, softmax attention, RMSNorm.",
     ["sigma_reparam_entropy", "lipschitz_muon_softcap", "seednorm_vs_rmsnorm",
      "prenorm_visual_norm_gap", "lipschitz_value_mbrl", "care_bn_spiking_rl"]),
    ("6. Beyond first order, and beyond fixed hyperparameters",
     "Natural-gradient-like steps, a trainable first layer, hyperparameters as functions of training.",
     "Stages 1-3; least squares.",
     ["sven_pseudoinverse_descent", "tract_first_layer", "self_tuning_networks"]),
    ("7. Training in fewer bits",
     "Block-scaled FP4 formats (NVFP4, MXFP4) in all three GEMMs of a linear layer: stochastic rounding, random"
     " Hadamard transforms, high-precision layers, and which of them matter; then estimating what each layer's "
     "precision costs in loss and choosing precisions under a FLOP budget with an integer program; pruning half"
     " the weights of a model for one domain, with importance scores that keep both general text and the "
     "domain's facts.",
     "Stage 2 (Stable-SPAM's simulated INT4); floating-point formats; Taylor expansions, integer linear "
     "programs.",
     ["nvfp4_pretraining_recipe", "snip_mixed_precision_ilp", "dual_pruning_domain"]),
    ("8. Training dynamics and generalization",
     "Why a network warm-started from its previous solution generalises worse than a fresh one trained on the "
     "same data, and how shrinking and perturbing the weights before each round restores it; models at the "
     "same, optimal pre-training loss that still transfer differently, and the flatness that tracks it; reading"
     " a run from the inside (per-layer activation statistics from forward hooks) for a stopping rule that "
     "needs no validation data; neural collapse, and a model of how far from it trained features stay; "
     "continual learning with a replay memory, where a network that reads its own prediction back forgets less "
     "and is better calibrated; limiting a classifier's confidence so that many samples cover the answer "
     "(pass@N); domain-specific heads chosen by their uncertainty at test time for held-out domains; "
     "self-supervised contrastive pre-training with several projection heads and a learned temperature for "
     "every pair (AMCL); overfitting a pre-trained language model on a few sequences (hyperfitting) so that "
     "greedy decoding stops repeating itself; federated adversarial training of an over-parameterised two-layer"
     " network, where the robust training loss still converges with non-IID clients; a Transformer meta-trained"
     " on many randomly projected tasks that turns from memorising its tasks into learning new ones in context "
     "as the number of tasks grows; grokking in a mixture-of-experts model watched through the expert pathways "
     "of its training samples; two losses pulling one shared embedding table apart in ELECTRA-style "
     "pre-training, and a stop-gradient that separates them (GDES).",
     "Stage 2 (Adam, learning-rate tuning); convolutional networks, learning-rate schedules; least squares, "
     "eigen- and singular value decompositions.",
     ["warm_start_shrink_perturb", "flatness_same_loss_transfer", "cnn_stop_learning_rule",
      "nc_perturbation_model", "idempotent_replay_cl", "pass_at_n_dco_confidence",
      "drm_domain_specific_heads", "amcl_multihead_contrast", "hyperfitting_greedy_ttr",
      "fed_adversarial_converge", "gpicl_task_count_transition", "moe_pathway_grokking",
      "gdes_electra_embedding"]),
    ("9. Low rank and sparsity",
     "Adam's state kept in a low-rank projection of the gradient (GaLore), and full-rank updates under that "
     "memory by scaling the residual gradient as Adam would (Fira); then searching a binary mask over frozen "
     "pretrained weights with learnable scores and a straight-through top-k, against magnitude pruning with and"
     " without fine-tuning; and low-rank adapters for fine-tuning (LoRA, LoRA-XS) initialised from the SVD of "
     "an approximated first full fine-tuning step (LoRA-SB) or updated through Adafactor's factored second "
     "moments (AdaPreLoRA); how much of a pretrained network one-shot magnitude pruning can remove before it "
     "breaks (essential sparsity); which weights become low-rank during pretraining and how a per-matrix rank "
     "allocation compresses them (WeLore); merging a run's adapter checkpoints by metric-weighted averaging; "
     "when the LoRA gradient of attention can be computed through low-rank factors at all (a norm threshold of "
     "order sqrt(log L)); fine-tuning on a 4-bit (NF4) frozen base (QLoRA) and resuming a run from the adapter "
     "alone; DoRA at high rank, with its row norm computed without the dense adapter product and its output "
     "composed by one fused GPU kernel.",
     "Stages 2-3; singular value decomposition; convolutional networks.",
     ["fira_lowrank_fullrank", "lottery_jackpot_mask_search", "lora_sb_update_init",
      "adaprelora_preconditioner", "essential_sparsity_oneshot", "welore_lowrank_emergence",
      "mwa_lora_ckpt_merge", "lora_norm_phase_transition", "qlora_domain_advising",
      "dora_factored_norm_kernel"]),
    ("10. Capstone: everything side by side",
     "Eight optimizers under one protocol; what a ranking can and cannot say.",
     "Stages 2-3.",
     ["optimizers_side_by_side"]),
]

VERDICT_CLASS = {"reproduced": "verdict-reproduced", "partially reproduced": "verdict-partial",
                 "not reproduced": "verdict-not", "inconclusive": "verdict-inconclusive"}


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def collect(root: Path) -> list[dict]:
    """One record per notebook: where it lives, its paper, verdict, reseed state and times (the
    results and the stability rule are the README table's: reprolib.dashboard)."""
    results = {r["slug"]: r for r in dashboard.load_results(root)}
    smoke = (_json(root / "figures" / "_smoke" / "times.json") or {}).get("notebooks", {})
    out = []
    for nb in sorted(p for p in root.glob("notebooks/*/*.ipynb") if not p.name.startswith(".")):
        slug, theme = nb.stem, nb.parent.name
        res = results.get(slug, {})
        owed = res.get("_pending") or not res
        title = json.loads(nb.read_text())["cells"][0]["source"]
        title = ("".join(title) if isinstance(title, list) else title).split("\n")[0].lstrip("# ").strip()
        out.append(dict(slug=slug, theme=theme, path=nb, title=title, paper={} if res.get("_new") else res.get("paper", {}),
                        verdict=("pending first run" if res.get("_new") else "pending rerun") if owed else res["verdict"],
                        stable="not checked" if owed else dashboard.stability(res),
                        gpu_minutes=None if owed else res.get("gpu_minutes"),
                        device=(res.get("device") or "").split(": ", 1)[-1], smoke_s=smoke.get(slug),
                        shared=res.get("gpu_exclusive") is False,
                        figure=None if owed or not res.get("figures") else
                        root / "figures" / slug / f"{res['figures'][0]}.png"))
    return out


def _paper_link(r: dict) -> str:
    p = r["paper"]
    if not p:   # a new notebook before its first run: its title cell names the paper
        return r["title"]
    if p.get("arxiv"):
        return f"[{p.get('title', r['title'])}](https://arxiv.org/abs/{p['arxiv']})"
    return p.get("title", r["title"]) + " (a comparison across papers)"


def _badge(verdict: str) -> str:
    cls = VERDICT_CLASS.get(verdict, "verdict-pending")
    return f'<span class="{cls}">{verdict}</span>'


def _times(r: dict) -> tuple[str, str]:
    where = f"an {r['device']} shared with other runs" if r.get("shared") else f"one {r['device']}"
    gpu = f"{r['gpu_minutes']:.1f} min on {where}" if r["gpu_minutes"] else "not yet run"
    smoke = f"{r['smoke_s']:.0f} s" if r["smoke_s"] is not None else "not measured"
    return gpu, smoke


def glance_cell(r: dict) -> dict:
    """The at-a-glance box put first on each notebook's page."""
    gpu, smoke = _times(r)
    theme = r["path"].parent.name
    text = "\n".join([
        ":::{admonition} At a glance",
        ":class: tip",
        f"- **Paper:** {_paper_link(r)}",
        f"- **Verdict:** {_badge(r['verdict'])} · reseed check: {r['stable']}",
        f"- **Full run:** {gpu} · **smoke run:** {smoke} of compute on a laptop CPU (2 cores)",
        f"- **Rerun it:** `make figures NB={r['slug']}` (GPU) · `make smoke NB={r['slug']}` (CPU, seconds) · "
        f"`jupyter lab notebooks/{theme}/{r['slug']}.ipynb`",
        ":::",
    ])
    return dict(cell_type="markdown", metadata={}, source=text)


def index_md(records: list[dict]) -> str:
    rows = ['<table class="results">', "<thead><tr><th>notebook</th><th>verdict</th><th>reseed</th><th>figure</th>"
            "</tr></thead><tbody>"]
    for r in records:
        page = f"notebooks/{r['theme']}/{r['slug']}.html"
        fig = (f'<a href="{page}"><img src="_static/figures/{r["slug"]}.png" alt="figure of {r["slug"]}"></a>'
               if r["figure"] else "")
        rows.append(f'<tr><td><a href="{page}">{r["title"]}</a></td><td>{_badge(r["verdict"])}</td>'
                    f"<td>{r['stable']}</td><td>{fig}</td></tr>")
    rows.append("</tbody></table>")
    themes = sorted({r["theme"] for r in records})
    return "\n".join([
        "# Reproductions: training dynamics and the geometry of learning", "",
        "One executable notebook per paper reproduces its key experiment at small scale on one GPU, states the "
        "paper's claim, tests it with a criterion written down before the run, and gives an honest verdict: "
        "*reproduced*, *partially reproduced*, *not reproduced*, or *inconclusive* when the run did not reach the "
        "claim's regime or the margin is inside the seed noise. The *reseed* column says whether the verdict held "
        "with a second, disjoint set of seeds.", "",
        "Start with the [syllabus](syllabus.md) for a path through the material, or open a notebook below.", "",
        *rows, "",
        "```{toctree}", ":hidden:", ":maxdepth: 2", "", "syllabus", *[f"themes/{t}" for t in themes], "```", ""])


def syllabus_md(records: list[dict]) -> str:
    by_slug = {r["slug"]: r for r in records}
    lines = ["# Syllabus", "",
             "A suggested path through the collection, for a course or for reading alone. Each notebook runs "
             "in two sizes: *smoke* (same code, tiny sizes, seconds on a laptop CPU: for reading and for class) "
             "and *full* (the reproduction itself, minutes on one GPU; the verdict counts only there). Each "
             "notebook ends with exercises, each with a hint and a worked solution (folded).", "",
             "**Prerequisites for all of it:** Python and NumPy, PyTorch tensors and autograd, gradient descent, "
             "the cross-entropy loss. Every notebook shows the library code it runs.", ""]
    seen = set()
    for title, teaches, prereq, slugs in PATH:
        present = [by_slug[s] for s in slugs if s in by_slug]
        if not present:
            continue
        lines += [f"## {title}", "", f"{teaches} *Prerequisites:* {prereq}", "",
                  "| notebook | verdict | smoke (laptop CPU) | full (one GPU) |", "|---|---|---|---|"]
        for r in present:
            gpu, smoke = _times(r)
            lines.append(f"| [{r['title']}](notebooks/{r['theme']}/{r['slug']}.ipynb) | {_badge(r['verdict'])} | "
                         f"{smoke} | {gpu} |")
            seen.add(r["slug"])
        lines.append("")
    rest = [r for r in records if r["slug"] not in seen]
    if rest:
        lines += ["## More", "", "| notebook | verdict | smoke (laptop CPU) | full (one GPU) |", "|---|---|---|---|"]
        for r in rest:
            gpu, smoke = _times(r)
            lines.append(f"| [{r['title']}](notebooks/{r['theme']}/{r['slug']}.ipynb) | {_badge(r['verdict'])} | "
                         f"{smoke} | {gpu} |")
        lines.append("")
    lines += ["## For teachers", "",
              "`make student` writes copies of every notebook with the outputs cleared and the scale set to smoke "
              "into `build/student/`: hand those out; the pages here keep the committed GPU outputs. Smoke runs "
              "take seconds, so a class can change a parameter and rerun a whole notebook live. Full runs need "
              "a GPU for a few minutes each.", ""]
    return "\n".join(lines)


def theme_md(theme: str, records: list[dict]) -> str:
    title, blurb = THEMES.get(theme, (theme.replace("-", " ").capitalize(), ""))
    entries = [f"../notebooks/{theme}/{r['slug']}" for r in records if r["theme"] == theme]
    return "\n".join([f"# {title}", "", blurb, "", "```{toctree}", ":maxdepth: 1", "", *entries, "```", ""])


def generate(root: Path, src: Path) -> list[dict]:
    """Write the Sphinx source tree for the site into `src` (emptied first)."""
    records = collect(root)
    if src.exists():
        shutil.rmtree(src)
    (src / "_static" / "figures").mkdir(parents=True)
    (src / "themes").mkdir()
    shutil.copy(HERE / "conf.py", src / "conf.py")
    shutil.copy(HERE / "custom.css", src / "_static" / "custom.css")
    for r in records:
        nb = json.loads(r["path"].read_text())
        cells = copy.deepcopy(nb["cells"])
        head = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
        cut = head.find("**The claim.**")   # the box goes right under the title, authors and links
        top, rest = (head[:cut], head[cut:]) if cut > 0 else (head, "")
        split = [dict(cells[0], source=top)] + ([dict(cell_type="markdown", metadata={}, source=rest)] if rest else [])
        nb["cells"] = split[:1] + [glance_cell(r)] + split[1:] + cells[1:]
        dest = src / "notebooks" / r["theme"] / f"{r['slug']}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(nb))
        if r["figure"] and r["figure"].exists():
            shutil.copy(r["figure"], src / "_static" / "figures" / f"{r['slug']}.png")
    (src / "index.md").write_text(index_md(records))
    (src / "syllabus.md").write_text(syllabus_md(records))
    for theme in sorted({r["theme"] for r in records}):
        (src / "themes" / f"{theme}.md").write_text(theme_md(theme, records))
    return records


def build(root: Path | None = None, out: Path | None = None, src: Path | None = None) -> Path:
    root = root or repo_root()
    out, src = out or root / "build" / "site", src or root / "build" / "site-src"
    t = time.perf_counter()
    generate(root, src)
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "auto", str(src), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"site: {out / 'index.html'} ({time.perf_counter() - t:.0f} s)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--src", type=Path)
    args = ap.parse_args(argv)
    build(out=args.out, src=args.src)
    return 0
