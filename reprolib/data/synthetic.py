"""Synthetic token languages with controlled statistics.

markov_language: an order-k Markov chain over V tokens whose V^k transition rows
are drawn from Dirichlet(alpha) (small alpha = peaked rows = low entropy). A
context s = (x_{t-k+1}, ..., x_t) is the base-V number with x_{t-k+1} most
significant, so appending x moves s to s' = (s mod V^(k-1)) V + x. Its entropy
rate is exact (Cover & Thomas, Elements of Information Theory, Thm 4.2.4):

    H = sum_s pi(s) H(P(. | s)),    pi = stationary distribution on contexts,

so a model's val loss minus H is its excess loss, in nats/token.

zipf_pcfg: a random probabilistic context-free grammar whose rule and terminal
probabilities follow Zipf's law, p_r ∝ r^(-s) over randomly permuted ranks r.
The skeleton (rules, lexicons, ranks) depends on the seed only, so sweeping s
changes how imbalanced the data are and nothing else.
"""
import hashlib

import numpy as np
import torch
from einops import rearrange

from .corpus import TokenCorpus

MAX_CONTEXTS = 2 ** 20   # V^k rows
MAX_ENTRIES = 2 ** 25    # V^(k+1) probabilities: P and its CDF table at 8 bytes each, 512 MiB


def _cdf_table(P: np.ndarray) -> np.ndarray:
    """Row r of P -> r + cumsum(P[r]), flattened: one sorted array for all rows' inverse CDFs."""
    c = np.cumsum(P, axis=1)
    c /= c[:, -1:]
    return (c + np.arange(len(P))[:, None]).ravel()


def _categorical(table: np.ndarray, n_cols: int, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x ~ P[rows] by inverse CDF with uniforms u, for many rows in one searchsorted."""
    # side='right' skips zero-probability columns; the clip guards rows + u rounding up to rows + 1
    idx = np.searchsorted(table, rows + u, side="right") - rows * n_cols
    return np.minimum(idx, n_cols - 1)


def _entropy(P: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(P * np.log(np.where(P > 0, P, 1.0))).sum(axis)


def markov_model(vocab_size: int = 64, order: int = 2, concentration: float = 0.3,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The chain behind markov_language: P [V^k, V] (row s = P(. | context s)) and pi [V^k]."""
    V, k = vocab_size, order
    if k < 1 or V < 2:
        raise ValueError(f"need vocab_size >= 2 and order >= 1, got {V}, {k}")
    if V ** k > MAX_CONTEXTS or V ** (k + 1) > MAX_ENTRIES:
        raise ValueError(f"vocab_size**order = {V ** k} contexts (limit 2**20) with {V} next-token probabilities "
                         f"each (limit 2**25 in all): the dense transition table and its sampling table would "
                         f"need {V ** (k + 1) * 16 / 2 ** 30:.1f} GiB; lower vocab_size or order")
    P = np.random.default_rng(seed).dirichlet(np.full(V, concentration), size=V ** k)
    pi = np.full(V ** k, V ** -k)
    # power iteration; peaked rows mix slowly (e.g. V=8, k=4, alpha=0.01 needs ~1e5 steps), so cap the
    # work at ~4e9 multiply-adds (~10 s) rather than hang
    n_iter = max(10_000, 4 * 10 ** 9 // V ** (k + 1))
    for _ in range(n_iter):
        # mass leaving s = (hi, lo) with token x lands on context (lo, x), whatever hi was
        new = rearrange(pi[:, None] * P, "(hi lo) x -> hi (lo x)", hi=V).sum(0)
        done = np.abs(new - pi).sum() < 1e-12
        pi = new / new.sum()
        if done:
            return P, pi
    raise RuntimeError(f"stationary distribution not converged to 1e-12 in {n_iter} power iterations: the chain "
                       f"mixes too slowly; raise concentration or lower order")


def markov_language(vocab_size: int = 64, order: int = 2, n_train: int = 1_000_000, n_val: int = 100_000,
                    concentration: float = 0.3, seed: int = 0) -> TokenCorpus:
    """Tokens from parallel stationary chains of markov_model, concatenated; entropy_rate is exact H."""
    V, k = vocab_size, order
    P, pi = markov_model(V, k, concentration, seed)
    H = float(pi @ _entropy(P))
    n = n_train + n_val
    # Each chain start breaks the Markov property once (its first token ignores the previous chain),
    # so use few long chains: starts are < 1 in 8192 tokens, and the Python loop over time is n/256
    # steps at most. info records n_chains and chain_len so a test can skip the seams.
    n_chains = int(np.clip(n // 8192, 1, 256))
    T = max(-(-n // n_chains), k)
    rng = np.random.default_rng([seed, 1])   # sampling stream, apart from the model's stream
    # u < 1 - 2^-30 keeps s + u < s + 1 in float64 for every s < 2^20, so the draw stays in row s
    u = rng.random((T, n_chains)) * (1 - 2.0 ** -30)
    table = _cdf_table(P)
    idx = np.empty((T, n_chains), dtype=np.int64)
    # the first k tokens of a chain are the digits of a context s ~ pi
    s = np.searchsorted(np.cumsum(pi) / pi.sum(), rng.random(n_chains) * (1 - 2.0 ** -30), side="right")
    idx[:k] = (s // V ** np.arange(k - 1, -1, -1)[:, None]) % V
    for t in range(k, T):
        # flat index s*V + x of the draw; its last k digits are the next context
        idx[t] = np.searchsorted(table, s + u[t], side="right")
        s = idx[t] % V ** k
    tokens = torch.from_numpy(rearrange(idx % V, "t c -> (c t)")[:n].copy())
    info = {"generator": "markov_language", "vocab_size": V, "order": k, "concentration": concentration,
            "seed": seed, "n_train": n_train, "n_val": n_val, "n_chains": n_chains, "chain_len": T,
            "entropy_rate_nats": H, "unigram_entropy_nats": float(_entropy(pi @ P))}
    return TokenCorpus(train=tokens[:n_train], val=tokens[n_train:], vocab_size=V, entropy_rate=H, info=info)


def _zipf(ranks: np.ndarray, s: float) -> np.ndarray:
    p = ranks.astype(np.float64) ** -s
    return p / p.sum(-1, keepdims=True)


def _pcfg_skeleton(N: int, R: int, V: int, seed: int) -> dict:
    """Rules, lexicons and rank orders, all from the seed alone (shared by every zipf_s).

    Symbols: nonterminal A in [0, N), preterminal N + p (emits one terminal from
    lexicon p), terminal 2N + t. Rule 0 of every A is preterminals only, the
    forced choice past max_depth, so every derivation terminates.
    """
    rng = np.random.default_rng(seed)
    L = rng.integers(1, 4, size=(N, R))                  # RHS lengths 1..3
    # child is a nonterminal w.p. 0.5: mean offspring 2 * 0.5 * (R-1)/R < 1 at s=0 (near-critical trees,
    # ~5-15 words a sentence); large s can push it past 1, then max_depth is what stops the tree
    is_nt = rng.random((N, R, 3)) < 0.5
    is_nt[:, 0] = False
    rhs = np.where(is_nt, rng.integers(0, N, (N, R, 3)), N + rng.integers(0, N, (N, R, 3)))
    m = max(1, (V - 1) // 4)                             # a word class: a quarter of the vocabulary
    lexicon = 1 + np.argsort(rng.random((N, V - 1)), axis=1)[:, :m]   # position j has rank j + 1
    rule_rank = 1 + np.argsort(rng.random((N, R)), axis=1)
    return {"L": L, "rhs": rhs, "lexicon": lexicon, "rule_rank": rule_rank, "is_nt": is_nt}


def _derive(sk: dict, rule_p: np.ndarray, lex_p: np.ndarray, n_sent: int, max_depth: int,
            rng: np.random.Generator) -> np.ndarray:
    """n_sent sentences, each followed by end-of-sentence 0, expanded breadth-first all at once.

    The frontier is one flat array in reading order; each pass replaces every
    nonterminal by its RHS (np.repeat keeps the order) and every preterminal by a word.
    """
    N, R = rule_p.shape
    rule_table, lex_table = _cdf_table(rule_p), _cdf_table(lex_p)
    sym = rearrange(np.stack([np.zeros(n_sent, np.int64), np.full(n_sent, 2 * N)]), "two n -> (n two)")
    depth = np.zeros_like(sym)
    while (todo := sym < 2 * N).any():
        pt = todo & (sym >= N)
        p = sym[pt] - N
        sym[pt] = 2 * N + sk["lexicon"][p, _categorical(lex_table, lex_p.shape[1], p, rng.random(p.size))]
        nt = np.flatnonzero(sym < N)
        A = sym[nt]
        r = np.where(depth[nt] >= max_depth, 0, _categorical(rule_table, R, A, rng.random(A.size)))
        counts = np.ones_like(sym)
        counts[nt] = sk["L"][A, r]
        parent = np.repeat(np.arange(sym.size), counts)
        offset = np.arange(parent.size) - np.repeat(np.cumsum(counts) - counts, counts)
        rule_of = np.full(sym.size, -1)
        rule_of[nt] = r
        rule_of = rule_of[parent]
        child = rule_of >= 0
        sym = sym[parent]
        sym[child] = sk["rhs"][sym[child], rule_of[child], offset[child]]
        depth = depth[parent] + child
    return sym - 2 * N


def zipf_pcfg(zipf_s: float = 1.0, n_nonterminals: int = 30, vocab_size: int = 256, n_train: int = 1_000_000,
              n_val: int = 100_000, rules_per_nonterminal: int = 8, max_depth: int = 12,
              seed: int = 0) -> TokenCorpus:
    """Sentences of a random Zipf-weighted PCFG joined by end-of-sentence id 0; entropy_rate is None."""
    N, R, V, s = n_nonterminals, rules_per_nonterminal, vocab_size, zipf_s
    if N < 1 or R < 1 or V < 2 or max_depth < 0:
        raise ValueError("need n_nonterminals >= 1, rules_per_nonterminal >= 1, vocab_size >= 2, max_depth >= 0")
    sk = _pcfg_skeleton(N, R, V, seed)
    rule_p = _zipf(sk["rule_rank"], s)
    lex_p = _zipf(np.broadcast_to(np.arange(1, sk["lexicon"].shape[1] + 1), sk["lexicon"].shape), s)
    # M[A, B] = expected count of B among A's children; spectral radius > 1: trees grow until max_depth
    used = sk["is_nt"] & (np.arange(3) < sk["L"][..., None])
    M = np.zeros((N, N))
    np.add.at(M, (np.broadcast_to(np.arange(N)[:, None, None], used.shape)[used], sk["rhs"][used]),
              np.broadcast_to(rule_p[..., None], used.shape)[used])
    rng = np.random.default_rng([seed, 1])
    n, chunks, n_sent, n_have = n_train + n_val, [], 1024, 0
    while n_have < n:
        chunk = _derive(sk, rule_p, lex_p, n_sent, max_depth, rng)
        chunks.append(chunk)
        n_have += chunk.size
        n_sent_total = sum(int((c == 0).sum()) for c in chunks)
        # size the next chunk from the mean length seen so far, so one or two more passes finish
        n_sent = int(1.05 * (n - n_have) * n_sent_total / n_have) + 16
    x = np.concatenate(chunks)
    n_sent_total = int((x == 0).sum())
    tokens = torch.from_numpy(x[:n].copy())
    freq = np.bincount(x[:n], minlength=V) / n
    info = {"generator": "zipf_pcfg", "zipf_s": s, "n_nonterminals": N, "vocab_size": V, "n_train": n_train,
            "n_val": n_val, "rules_per_nonterminal": R, "max_depth": max_depth, "seed": seed,
            "lexicon_size": int(sk["lexicon"].shape[1]), "mean_sentence_len": (x.size - n_sent_total) / n_sent_total,
            "unigram_entropy_nats": float(_entropy(freq)),
            "branching_factor": float(np.abs(np.linalg.eigvals(M)).max()),
            "grammar_sha256": hashlib.sha256(b"".join(sk[k].tobytes() for k in sorted(sk))).hexdigest()[:16]}
    return TokenCorpus(train=tokens[:n_train], val=tokens[n_train:], vocab_size=V, entropy_rate=None, info=info)
