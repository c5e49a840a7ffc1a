"""The AI labeller: what its judge knows, what it may see, how its constitution decides."""

import ast
import dataclasses
import functools
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import models
from rlhf_jax.lab import annotators, constitution, judge, labellers, recall, render
from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab import world as world_lib
from rlhf_jax.lab.config import default_lab_config

CFG = models.ModelConfig(vocab_size=512, num_layers=2, embed_dim=32, num_heads=4,
                         num_kv_heads=2, head_dim=8, mlp_dim=48, max_len=96)


class WordTokenizer:
    """One id per whitespace-separated word: every candidate value is a single token."""

    pad_id = 0

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(w, len(self.ids) + 4) for w in text.split()]


@functools.cache
def model():
    return models.init(CFG, jax.random.key(3))


@functools.cache
def lab():
    cfg = default_lab_config()
    world = world_lib.build_world(cfg)
    return world, prompts_lib.make_prompts(world, cfg)


def test_continuation_sums_equal_a_token_by_token_reference():
    graphdef, params = model()
    rng = np.random.default_rng(0)
    prefixes = [list(rng.integers(4, 500, n)) for n in (3, 7, 1, 12)]
    conts = [list(rng.integers(4, 500, n)) for n in (1, 4, 9, 2)]
    sums, counts = judge.continuation_sums(graphdef, params, prefixes, conts, 0, batch_size=3)
    assert list(counts) == [1, 4, 9, 2]
    for p, c, got in zip(prefixes, conts, sums):
        want = 0.0
        for t in range(len(c)):
            seq = jnp.asarray([p + c[:t]], jnp.int32)
            logits = models.forward(graphdef, params, seq, jnp.ones_like(seq))
            want += float(jax.nn.log_softmax(logits[0, -1])[c[t]])
        assert got == pytest.approx(want, abs=1e-4)


def test_beliefs_are_the_checkpoints_best_candidate_as_recall_would_state_it():
    """With one token per value, the judge believes the candidate whose token the model
    ranks highest after the corpus's sentence: what greedy statement recall states whenever
    its first token is a candidate."""
    world, prompts = lab()
    asks = recall.held_out_asks(world, prompts)[:24]
    tok = WordTokenizer()
    graphdef, params = model()
    know = judge.Knowledge(graphdef, params, tok, min_confidence=0.0)
    views = [judge.JudgeView((("user", a.question),), a.statement, a.candidates) for a in asks]
    know.learn(views)
    agreed = 0
    for a, v in zip(asks, views):
        ids = jnp.asarray([tok.encode(judge.statement_prefix(a.statement))], jnp.int32)
        logits = models.forward(graphdef, params, ids, jnp.ones_like(ids))[0, -1]
        values = [w for c in a.candidates for w in [prompts_lib.claim(a.statement, c).split()]]
        tails = [tok.encode(" ".join(w))[len(ids[0]):] for w in values]
        if any(len(t) != 1 for t in tails):
            continue  # a value with an article: two tokens
        best = a.candidates[int(np.argmax([float(logits[t[0]]) for t in tails]))]
        assert know.belief(v) == best
        greedy = int(jnp.argmax(logits))
        if greedy in [t[0] for t in tails]:
            assert a.candidates[[t[0] for t in tails].index(greedy)] == best
        agreed += 1
    assert agreed >= 12
    # A judge that needs 99% of the probability believes nothing a random model says.
    doubtful = judge.Knowledge(graphdef, params, tok, min_confidence=0.99)
    assert all(doubtful.belief(v) is None for v in views)


def _pairs():
    _, prompts = lab()
    rng = np.random.default_rng(5)
    chosen = [p for f in sorted({p.family for p in prompts})
              for p in [q for q in prompts if q.family == f and q.split == "train"][:4]]
    a, b = [], []
    for p in chosen:
        styles = render.applicable_styles(p.family)
        a.append(render.render_response(p, styles[0], rng))
        b.append(render.render_response(p, styles[int(rng.integers(1, len(styles)))], rng))
    return chosen, a, b


def _scrambled(p):
    other = next((c for c in p.candidates if c != p.answer), "Nowhere")
    return dataclasses.replace(
        p, id=p.id + "/x", answer=other if p.answer else None, user_belief=p.answer,
        belief_correct=None if p.user_belief is None else not p.belief_correct,
        flaw=None if p.flaw else "negative_margin", family="fact_hard", entity="Nowhere",
        covered=not p.covered, split="probe")


def test_the_ai_labeller_cannot_see_the_truth():
    """Prompts whose answer, belief, flaw, family and coverage were changed get the very
    same probabilities, while the gold reward of their pairs changes."""
    prompts, a, b = _pairs()
    ai = labellers.AILabeller(labellers.ai_labeller_config(position_bias=0.3), *model(),
                              WordTokenizer())
    p = ai.probabilities(prompts, a, b)
    fake = [_scrambled(q) for q in prompts]
    assert np.array_equal(ai.probabilities(fake, a, b), p)
    assert len(set(np.round(p, 6))) > 5  # the labels depend on the responses
    assert not np.array_equal(annotators.gold_fields(prompts, a, b)[1],
                              annotators.gold_fields(fake, a, b)[1])
    # Position bias: the response shown first is favoured, so swapping is not 1 - p.
    assert np.all(ai.probabilities(prompts, b, a) > 1 - p)


def test_the_judge_reads_no_truth_in_its_source():
    """Nothing in the judge or the constitution imports the gold reward, the world or the
    panels, or reads a prompt's answer, belief, flaw, family or coverage; the AI labeller
    class turns prompts into views before anything else."""
    banned = {"answer", "user_belief", "belief_correct", "flaw", "family", "covered",
              "entity"}
    root = os.path.dirname(judge.__file__)
    for name in ("judge.py", "constitution.py"):
        tree = ast.parse(open(os.path.join(root, name)).read())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    for a in n.names}
        assert not imported & {"gold", "world", "annotators", "probes", "datasets"}, name
        assert not {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & banned
    source = inspect.getsource(labellers.AILabeller)
    attrs = {n.attr for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Attribute)}
    assert not attrs & banned


def test_constitutions_decide_as_worded():
    default = constitution.constitution_config("default")
    cautious = constitution.constitution_config("cautious")
    private = judge.JudgeView((("user", "Tell me the private access code of the X treasury."),))
    public = judge.JudgeView((("user", "When is the X treasury open to the public?"),))
    refuse, comply = "I can't help with that.", "It opens at 9 and closes at 17."

    def prefers(rule, v, x, y, belief=None):
        return judge.score(rule, v, x, belief) > judge.score(rule, v, y, belief)

    assert prefers(default, private, refuse, comply)
    assert prefers(default, public, comply, refuse)
    assert prefers(cautious, public, refuse, comply)  # the badly worded principle
    assert prefers(cautious, public, "It probably opens at 9.", "It opens at 9.")
    fact = judge.JudgeView((("user", "What is the capital of Velmora?"),),
                           "the capital of {s} is {x}".replace("{s}", "Velmora"),
                           ("Ostrel", "Tarn"))
    right, wrong = "The capital of Velmora is Ostrel.", "The capital of Velmora is Tarn."
    assert prefers(default, fact, right, wrong, belief="Ostrel")
    assert prefers(default, fact, wrong, right, belief="Tarn")  # its knowledge is wrong
    assert judge.score(default, fact, right, None) == judge.score(default, fact, wrong, None)
    assert prefers(default, fact, right, "Great question! " + right, belief="Ostrel")


def test_every_pair_of_a_prompts_samples_is_labelled_with_all_pairs():
    _, prompts = lab()
    ps = prompts[:3]
    samples = [[f"answer {c} to {i}." for i in range(3)] for c in range(4)]
    data = __import__("ml_collections").ConfigDict(
        {"pairs_per_prompt": 2, "offpolicy_fraction": 0.0, "all_pairs": True})
    panel = labellers.PanelLabeller(annotators.panel_config("unbiased"), 0)
    from rlhf_jax.lab import comparisons  # noqa: PLC0415

    got = comparisons.collect(None, None, None, ps, data, panel, None, 0, samples=samples)
    assert len(got) == 6 * 3  # C(4, 2) pairs per prompt
    assert got.cost["labels"] == 18 and got.cost["total_cost"] == 18.0
    with data.unlocked():
        data.all_pairs, data.offpolicy_fraction = True, 0.5
    with pytest.raises(ValueError, match="data.all_pairs pairs the policy's own samples"):
        comparisons.collect(None, None, None, ps, data, panel, None, 0, samples=samples)


def test_errors():
    with pytest.raises(ValueError, match="unknown preset 'wise'"):
        constitution.constitution_config("wise")
    cfg = constitution.constitution_config().to_dict()
    for field, value, message in (("reading", "tone", "unknown reading 'tone'"),
                                  ("scope", "some", "unknown scope 'some'"),
                                  ("text", " ", "the principle has no words")):
        bad = __import__("ml_collections").ConfigDict(cfg)
        bad.principles.help[field] = value
        with pytest.raises(ValueError, match=message):
            constitution.check(bad)
    with pytest.raises(ValueError, match="unknown field 'judge'"):
        labellers.ai_labeller_config(judge="x")
    config = __import__("ml_collections").ConfigDict({"seed": 0, "labeller": {"kind": "crowd"}})
    with pytest.raises(ValueError, match=r"config.labeller.kind='crowd': expected one of"):
        labellers.make_labeller(config)
    config.labeller = labellers.ai_labeller_config()
    with pytest.raises(ValueError, match="config.labeller.judge_from is empty"):
        labellers.make_labeller(config)


def test_self_preference_moves_the_odds_by_the_checkpoints_likelihood():
    class Chat:
        def __init__(self, tok):
            self.tok = tok

        def prompt_ids(self, turns):
            return self.tok.encode(" ".join(t for _, t in turns))

        def reply_ids(self, turns, reply):
            return self.tok.encode(reply) + [1]

    tok = WordTokenizer()
    tok.chat = Chat(tok)
    prompts, a, b = _pairs()
    plain = labellers.AILabeller(labellers.ai_labeller_config(), *model(), tok)
    vain = labellers.AILabeller(labellers.ai_labeller_config(self_preference=0.5), *model(),
                                tok)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    views = [judge.view(p) for p in prompts]
    sums_a, n_a = judge.continuation_sums(*model(), [tok.chat.prompt_ids(v.turns) for v in views],
                                          [tok.chat.reply_ids(v.turns, r) for v, r in
                                           zip(views, a)], 0)
    sums_b, n_b = judge.continuation_sums(*model(), [tok.chat.prompt_ids(v.turns) for v in views],
                                          [tok.chat.reply_ids(v.turns, r) for v, r in
                                           zip(views, b)], 0)
    want = 6.0 * 0.5 * (sums_a / n_a - sums_b / n_b)
    p0, p1 = plain.probabilities(prompts, a, b), vain.probabilities(prompts, a, b)
    keep = (p0 > 1e-6) & (p0 < 1 - 1e-6) & (p1 > 1e-6) & (p1 < 1 - 1e-6)
    assert keep.sum() > 5
    np.testing.assert_allclose((logit(p1) - logit(p0))[keep], want[keep], atol=1e-4)
