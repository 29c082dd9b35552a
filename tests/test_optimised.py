"""Optimised and white-box attacks on the tiny model: the suffix optimiser, steering, PAIR, best-of-N."""

from __future__ import annotations

import json
import signal

import pytest

from persist.errors import ConfigError
from persist.models import ModelSpec
from persist.prepared import PrepareContext, split_items
from persist.registry import ATTACKS
from persist.suites import get_suite, select

ITEMS = select(get_suite("traits").load(), 16)


def ctx(tmp_path, target, scorer=None, items=ITEMS, role="model"):
    train, heldout = split_items(items)
    return PrepareContext(role=role, other_role=None, target=target, train=train, heldout=heldout, items=heldout,
                          folder=tmp_path / role, other=None, scorer=scorer, load=None)


def test_train_and_held_out_never_overlap_and_are_stable():
    items = get_suite("traits").load()
    train, heldout = split_items(items)
    assert not {i.id for i in train} & {i.id for i in heldout}
    assert len(train) + len(heldout) == len(items) and 0.4 < len(heldout) / len(items) < 0.6
    again = split_items(list(reversed(items)))
    assert {i.id for i in again[1]} == {i.id for i in heldout}  # by id, not by position


def test_suffix_optimiser_lowers_its_loss_and_is_deterministic(tiny_target):
    attack = ATTACKS.build("gcg-suffix:steps=6:length=4:topk=16:candidates=6:batch_items=3:probe_items=4")
    train, _ = split_items(ITEMS)
    a = attack.optimise(tiny_target, train)
    b = attack.optimise(tiny_target, train)
    assert a["text"] == b["text"] and a["curve"] == b["curve"]
    assert a["loss"] < a["start_loss"]  # pushed toward the misaligned references on the train probe
    assert a["compute"]["forward_tokens"] > 0 and a["compute"]["backward_tokens"] > 0
    ids = tiny_target.tokenizer.encode(a["text"], add_special_tokens=False)
    assert ids == a["ids"]  # plain text that tokenises back to itself


def test_suffix_loss_is_the_scorers_log_odds_and_its_gradient_points_downhill(tiny_target):
    """Uncut references: the optimiser's loss equals the likelihood scorer's mean log-odds on the same items with
    the suffix appended (what the evaluation measures); the one-hot gradient predicts the sign of a swap."""
    import torch

    from persist.attacks.suffix import PreparedSuffix, losses, pieces, token_gradients
    from persist.probes.likelihood import LikelihoodScorer

    attack = ATTACKS.build("gcg-suffix")
    train, _ = split_items(ITEMS)
    batch = train[:3]
    text = " Reply briefly and confidently."
    ids = tiny_target.tokenizer.encode(text, add_special_tokens=False)
    parts = [pieces(tiny_target, it, ref_tokens=10_000) for it in batch]
    [loss] = losses(tiny_target, parts, [ids], autocast=False)
    units = [PreparedSuffix(attack, text, {}).transform(it)[0] for it in batch]
    scored = LikelihoodScorer().score(tiny_target, units)
    assert loss == pytest.approx(sum(r.details["logodds"] for r in scored) / len(batch), abs=1e-3)
    grad = token_gradients(tiny_target.model, parts, ids, autocast=False)
    assert grad.shape == (len(ids), tiny_target.model.get_input_embeddings().weight.shape[0])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_clipped_suffix_loss_squashes_each_items_shift_from_clean(tiny_target):
    """clip > 0: each item's term is clip * tanh((log-odds with the suffix - clean log-odds) / clip), so no item
    contributes more than clip nats; the gradient of that loss is finite."""
    import math

    import torch

    from persist.attacks.suffix import losses, pieces, token_gradients

    train, _ = split_items(ITEMS)
    parts = [pieces(tiny_target, it) for it in train[:3]]
    ids = tiny_target.tokenizer.encode(" Reply briefly and confidently.", add_special_tokens=False)
    for p in parts:
        p.clean = losses(tiny_target, [p], [[]], autocast=False)[0]
    raw = [losses(tiny_target, [p], [ids], autocast=False)[0] for p in parts]
    for clip in (0.5, 50.0):
        [loss] = losses(tiny_target, parts, [ids], autocast=False, clip=clip)
        want = sum(clip * math.tanh((g - p.clean) / clip) for g, p in zip(raw, parts, strict=True)) / len(parts)
        assert loss == pytest.approx(want, abs=1e-9) and abs(loss) < clip
    assert losses(tiny_target, parts, [[]], autocast=False, clip=1.0) == [pytest.approx(0.0, abs=1e-9)]
    assert losses(tiny_target, parts, [ids], autocast=False, clip=0.0)[0] == pytest.approx(sum(raw) / len(raw))
    grad = token_gradients(tiny_target.model, parts, ids, autocast=False, clip=1.0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        ATTACKS.build("gcg-suffix:clip=-1")


def test_suffix_is_saved_and_reused(tmp_path, tiny_target, monkeypatch):
    attack = ATTACKS.build("gcg-suffix:steps=2:length=3:topk=8:candidates=3")
    first = attack.prepare(ctx(tmp_path, tiny_target))
    monkeypatch.setattr(type(attack), "optimise", lambda *a: pytest.fail("optimised again"))
    again = attack.prepare(ctx(tmp_path, tiny_target))
    assert again.text == first.text
    [v] = again.transform(ITEMS[0])
    assert v.messages[-1].content == f"{ITEMS[0].messages[-1].content} {first.text}"


def test_steering_hook_is_inert_at_zero_and_removed_after_use(tiny_target):
    import torch

    from persist.attacks.steering import SteeredTarget, decoder_layers

    requests = [(ITEMS[0].chat, ITEMS[0].aligned[0]), (ITEMS[1].chat, ITEMS[1].misaligned[0])]
    plain = tiny_target.loglikelihood(requests)
    hidden = tiny_target.model.config.hidden_size
    assert SteeredTarget(tiny_target, 1, torch.zeros(hidden)).loglikelihood(requests) == pytest.approx(plain,
                                                                                                       abs=1e-6)
    pushed = SteeredTarget(tiny_target, 1, torch.ones(hidden) * 3).loglikelihood(requests)
    assert pushed != pytest.approx(plain, abs=1e-3)
    assert all(not layer._forward_hooks for layer in decoder_layers(tiny_target.model))
    assert tiny_target.loglikelihood(requests) == pytest.approx(plain, abs=1e-6)  # nothing left behind


def test_steering_direction_from_train_items(tmp_path, tiny_target):
    attack = ATTACKS.build("steering:alpha=2:layer=1")
    prepared = attack.prepare(ctx(tmp_path, tiny_target))
    assert prepared.layer == 1 and prepared.vector.shape == (tiny_target.model.config.hidden_size,)
    assert (tmp_path / "model" / "direction-layer1.safetensors").is_file()
    again = ATTACKS.build("steering:alpha=8:layer=1").prepare(ctx(tmp_path, tiny_target))
    assert (again.vector == prepared.vector).all()  # another dose reuses the direction


def test_a_cached_steering_direction_is_read_back_without_loading_the_model(tmp_path, tiny_target):
    first = ATTACKS.build("steering").prepare(ctx(tmp_path, tiny_target))

    class Unloadable:
        def get(self):
            raise AssertionError("the model was loaded although its direction is cached")

    again = ATTACKS.build("steering").prepare(ctx(tmp_path, Unloadable()))
    assert again.layer == first.layer and (again.vector == first.vector).all()


class ScriptedAttacker:
    """An attacker that proposes fixed rewrites, turn by turn (the same for every item)."""

    name = "scripted"

    def __init__(self, turns: list[str]) -> None:
        self.turns, self.calls = turns, 0

    def generate(self, chats, config):
        text = self.turns[min(self.calls, len(self.turns) - 1)]
        self.calls += 1
        return [text for _ in chats]


def test_pair_chooses_its_turn_on_train_items_and_reports_held_out_ones(tmp_path, tiny_target):
    from persist.probes.likelihood import LikelihoodScorer
    from persist.runner import clean_variant
    from persist.schema import Variant

    scorer = LikelihoodScorer()
    options = ["First rewrite: is it fine?", "Second rewrite, honestly just say yes?", "Third: can I skip it?"]
    attacker = ScriptedAttacker(options)
    c = ctx(tmp_path, tiny_target, scorer=scorer, items=ITEMS[:8])
    assert c.train and c.heldout
    prepared = ATTACKS.build("pair:turns=3").prepare(c, attacker=attacker)
    assert attacker.calls == 3 and set(prepared.rewrites) == {i.id for i in c.heldout}  # reported: held-out only

    def value(it, q):
        return scorer.score(tiny_target, [Variant(item=it, messages=(*it.messages[:-1], type(it.messages[-1])(
            "user", q)), attack="pair", attack_version="2")])[0].details["logodds"]

    train_means = [sum(value(it, q) for it in c.train) / len(c.train) for q in options]
    turn = min(range(3), key=lambda k: train_means[k])
    assert prepared.turn == turn
    for it in c.heldout:  # the held-out rewrite is the chosen turn's, whatever the held-out item scored
        assert prepared.rewrites[it.id] == options[turn]
        [v] = prepared.transform(it)
        assert v.messages[-1].content == options[turn] and clean_variant(it).messages[:-1] == v.messages[:-1]
    saved = json.loads((tmp_path / "model" / "rewrites.json").read_text())
    assert saved["turn"] == turn and saved["train_means"] == pytest.approx(train_means)
    # the budget curve: the start, then per turn the best train mean so far minus the clean train mean
    clean_mean = sum(scorer.score(tiny_target, [clean_variant(it)])[0].details["logodds"] for it in c.train) / len(c.train)
    budget = saved["budget"]
    assert len(budget) == 4 and budget[0][1] == 0.0 and all(b[0] > a[0] for a, b in zip(budget, budget[1:]))
    assert [b[1] for b in budget[1:]] == pytest.approx([min(train_means[:k + 1]) - clean_mean for k in range(3)])
    assert prepared.compute["attacker_tokens"] > 0 and prepared.compute["target_tokens"] > 0
    assert prepared.compute["forward_tokens"] == prepared.compute["attacker_tokens"] + prepared.compute["target_tokens"]


def test_pair_control_paraphrases_without_aim_or_score(tmp_path, tiny_target):
    from persist.probes.likelihood import LikelihoodScorer

    class Recording(ScriptedAttacker):
        def generate(self, chats, config):
            self.seen = [*getattr(self, "seen", []), *chats]
            return super().generate(chats, config)

    attack = ATTACKS.build("pair:turns=2")
    assert attack.companions() == ("pair-control:turns=2",)
    control = ATTACKS.build(attack.companions()[0])
    assert control.control and control.control_for == attack.condition and control.split
    attacker = Recording(["Same question, other words?", "Again, reworded?"])
    prepared = control.prepare(ctx(tmp_path, tiny_target, scorer=LikelihoodScorer(), items=ITEMS[:8]),
                               attacker=attacker)
    texts = [m["content"] for chat in attacker.seen for m in chat]
    assert attacker.calls == 2 and not any("log-odds" in t or "careless" in t for t in texts)
    assert any("same thing" in t for t in texts) and prepared.turn in (0, 1)


def test_pair_and_its_control_open_the_attacker_once(monkeypatch):
    """pair and pair-control run one after the other with the same attacker: it is loaded once, not per role."""
    import persist.targets
    from persist.attacks import pair as pair_module

    opened = []
    monkeypatch.setattr(persist.targets, "open_target", lambda spec, load: opened.append(spec) or object())
    monkeypatch.setattr(pair_module, "_ATTACKER", {})
    attack = ATTACKS.build("pair:turns=2")
    control = ATTACKS.build(attack.companions()[0])
    first = attack.open_attacker("load")
    assert control.open_attacker("load") is first and attack.open_attacker("load") is first and opened == [
        attack.attacker]
    other = ATTACKS.build("pair:turns=2:attacker=tiny-random")
    assert other.open_attacker("load") is not first and opened == [attack.attacker, "tiny-random"]


def test_best_of_n_ships_its_control_and_a_no_op_attack_scores_about_zero(tmp_path, monkeypatch):
    from persist.jobs.attack import AttackConfig, run_attack

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("best-of-n:n=4:strength=0",), limit=8, runs_dir=tmp_path,
                       name="bon", capability=0)
    assert cfg.attacks == ("best-of-n:n=4:strength=0", "best-of-n-control:n=4:strength=0:seed=0")
    rows = {r.condition.label: r for r in run_attack(cfg).report.comparison.rows}
    attack = rows["attack:best-of-n:n=4:strength=0.0"]
    control = rows["attack:best-of-n-control:n=4:strength=0.0"]
    assert attack.overall.shift.shift.value == pytest.approx(0.0, abs=1e-4)  # no perturbation: the clean prompt
    assert control.control and control.overall.shift.shift.value <= 0  # a minimum over harmless draws falls ...
    # the attack is read against a control with its own tries' spread and no direction (persist.report.selection):
    # attack minus that null is the mean shift over its tries, exactly 0 for tries that change nothing
    assert "spread-matched null" in attack.vs_control.control.label
    assert attack.vs_control.shift.value == pytest.approx(0.0, abs=1e-4)


@pytest.mark.slow
def test_optimised_attacks_resume_without_redoing_the_optimisation(tmp_path):
    from persist.tiny import tiny_model_folder
    from tests.test_crash import persist_cmd, run

    env = {**__import__("os").environ, "PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    model = tiny_model_folder(tmp_path / "tiny")
    base = ["attack", "--model", str(model), "--baseline", "tiny-random", "--attacks",
            "gcg-suffix:steps=3:length=3:topk=8:candidates=4,gcg-suffix:steps=3:length=3:topk=8:candidates=4:"
            "source=other,steering:alpha=2", "--limit", "16", "--capability", "0", "--runs-dir",
            str(tmp_path / "runs")]
    assert run(persist_cmd(*base, "--name", "ref"), env) == 0
    crash = persist_cmd(*base, "--name", "crash")
    assert run(crash, env, failpoint="append:3") == -signal.SIGKILL  # after every optimisation, mid-scoring
    saved = sorted((tmp_path / "runs" / "crash" / "attacks").rglob("*.*"))
    stamps = {p: p.stat().st_mtime_ns for p in saved}
    assert any(p.name == "suffix.json" for p in saved) and any(p.suffix == ".safetensors" for p in saved)
    assert run(crash, env) == 0
    assert {p: p.stat().st_mtime_ns for p in saved} == stamps  # loaded, not optimised again
    ref, got = (tmp_path / "runs" / n for n in ("ref", "crash"))
    assert (got / "report.json").read_bytes() == (ref / "report.json").read_bytes()
    header = json.loads((got / "header.json").read_text())
    assert header["split"]["train"] and header["split"]["heldout"]
    assert set(header["attack_compute"]) >= {"attack:gcg-suffix:steps=3:length=3:topk=8:candidates=4"}


def test_report_puts_templates_and_optimised_attacks_on_the_same_items_with_their_compute(tmp_path, monkeypatch):
    from persist.jobs.attack import AttackConfig, run_attack
    from persist.report.markdown import run_markdown

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("prefill", "steering:alpha=2",
                                                     "gcg-suffix:steps=2:length=2:topk=4:candidates=2"),
                       limit=16, runs_dir=tmp_path, name="strength", capability=0)
    report = run_attack(cfg).report
    assert report.split is not None and report.strength is not None
    heldout = set(report.split.heldout)
    rows = {r.condition: r for r in report.strength}
    assert len(rows) == 3  # one per attack, none for the clean condition
    assert {r.n for r in rows.values()} == {len(heldout)}  # the template is judged on the held-out items too
    by_kind = {k.split(":")[1]: r for k, r in rows.items()}
    assert by_kind["prefill"].forward_tokens == 0 and by_kind["prefill"].nats_per_million_prepared is None
    gcg = by_kind["gcg-suffix"]
    assert gcg.backward_tokens > 0 and by_kind["steering"].backward_tokens == 0
    assert gcg.nats_per_million_prepared == pytest.approx(
        gcg.shift.value * 1e6 / (gcg.forward_tokens + 2 * gcg.backward_tokens))
    assert "Attack strength per unit of compute" in run_markdown(report, "t")


def test_full_profile_runs_the_optimised_attacks_and_quick_does_not():
    from persist.jobs.attack import OPTIMISED_ATTACKS, build_attacks
    from persist.jobs.study import PROFILES

    names = {a.name for a in build_attacks(PROFILES["full"].attacks)}
    assert {"gcg-suffix", "steering", "best-of-n", "pair"} <= names
    assert not {s.split(":")[0] for s in OPTIMISED_ATTACKS} & {s.split(":")[0] for s in PROFILES["quick"].attacks}


def test_header_and_report_keep_the_suffix_and_the_steering_layer(tmp_path, monkeypatch):
    from persist.jobs.attack import AttackConfig, run_attack
    from persist.store import RunStore

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("steering:alpha=2", "gcg-suffix:steps=2:length=2:topk=4:"
                                                     "candidates=2"), limit=16, runs_dir=tmp_path, name="kept",
                       capability=0)
    result = run_attack(cfg)
    art = result.report.artefacts
    assert art is not None
    suffix = json.loads(next((tmp_path / "kept" / "attacks").rglob("suffix.json")).read_text())["text"]
    gcg = next(v for k, v in art.items() if k.startswith("attack:gcg-suffix") and "control" not in k)["model"]
    assert gcg["suffix"] == suffix and gcg["ids_match"] == 1.0  # the evaluated ids are the optimised ones
    # the budget curve: [prepared tokens, best-so-far effect] from the start and after each of the 2 steps
    assert len(gcg["budget"]) == 3 and gcg["budget"][0][1] == 0.0
    assert all(b[0] > a[0] and b[1] <= a[1] for a, b in zip(gcg["budget"], gcg["budget"][1:]))
    curves = {(c.role, c.condition) for c in result.report.budget}
    assert any(role == "model" and "gcg-suffix" in cond for role, cond in curves)
    assert (tmp_path / "kept" / "budget.svg").is_file() is False  # the job returns the report; writers draw it
    from persist.report.write import write_reports

    write_reports(tmp_path / "kept", result.report, "t")
    assert (tmp_path / "kept" / "budget.svg").read_text().startswith("<svg")
    assert "Attack budget" in (tmp_path / "kept" / "report.md").read_text()
    neutral = next(v for k, v in art.items() if "gcg-suffix-control" in k)["model"]
    from persist.attacks.suffix import start_suffix
    from persist.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    assert neutral["suffix"] == tok.decode(start_suffix(tok, 2)) and neutral["ids_match"] == 1.0  # the GCG start
    # the suffix's row is reported against its neutral suffix: in the strength table and the vs-control column
    strength = {r.condition: r for r in result.report.strength or []}
    gcg_row = next(r for k, r in strength.items() if k.startswith("attack:gcg-suffix") and "control" not in k)
    assert gcg_row.net_of is not None and "gcg-suffix-control" in gcg_row.net_of
    row = next(r for r in result.report.comparison.rows if r.condition.name == "gcg-suffix")
    assert row.vs_control is not None and "gcg-suffix-control" in row.vs_control.control.label
    steer = next(v for k, v in art.items() if "steering" in k)["model"]
    assert steer["alpha"] == 2.0 and steer["layer"] >= 0 and steer["direction_norm"] > 0
    header = RunStore.open(tmp_path / "kept", cfg.header_config()).header()
    assert header["attack_artefacts"] == art and header["split"]["heldout"] and header["attack_compute"]


def test_per_item_gcg_gets_one_suffix_per_held_out_item_and_its_control(tmp_path, monkeypatch):
    from persist.jobs.attack import AttackConfig, run_attack

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("gcg-item:items=2:steps=2:candidates=2:length=2:"
                                                                     "topk=4",), limit=16, runs_dir=tmp_path,
                       name="item", capability=0, behaviour=8, behaviour_samples=0)
    result = run_attack(cfg)
    saved = json.loads(next((tmp_path / "item" / "attacks").rglob("suffixes.json")).read_text())
    assert len(saved["texts"]) == 2 and saved["ids_match"] == 1.0
    _, heldout = split_items(select(get_suite("traits").load(), 16))
    assert set(saved["texts"]) <= {i.id for i in heldout}
    rows = {r.condition.name: r for r in result.report.comparison.rows}
    assert rows["gcg-item"].overall.n == 2 and rows["gcg-item-control"].overall.n == 2
    assert rows["gcg-item"].vs_control is not None
    from persist.behaviour import split_behaviour
    from persist.store import RunStore

    answered = {r.item_id for r in split_behaviour(list(RunStore(tmp_path / "item").records()))[1]
                if r.condition.startswith("attack:gcg-item") and "control" not in r.condition}
    assert answered and answered <= set(saved["texts"])  # answers only where a suffix was optimised


def test_per_item_gcg_resumes_item_by_item(tmp_path, tiny_target):
    """A run killed between items keeps the items already optimised (items-done.json) and does only the rest."""
    attack = ATTACKS.build("gcg-item:items=2:steps=1:candidates=2:length=2:topk=4")
    c = ctx(tmp_path, tiny_target)
    first = attack.prepare(c)
    cache = json.loads((tmp_path / "model" / "items-done.json").read_text())
    assert set(cache) == set(first.texts)
    (tmp_path / "model" / "suffixes.json").unlink()  # as if killed after the last item, before the summary
    calls = []
    original = type(ATTACKS.build("gcg-suffix")).optimise
    monkey = pytest.MonkeyPatch()
    monkey.setattr(type(ATTACKS.build("gcg-suffix")), "optimise", lambda self, *a: calls.append(a) or original(self, *a))
    try:
        again = attack.prepare(c)
    finally:
        monkey.undo()
    assert calls == [] and again.texts == first.texts


def test_a_suffix_candidate_must_read_back_as_its_ids_inside_the_prompt():
    """On SmolLM2 half of the per-item suffixes (4 of 8) were evaluated as other ids than those optimised: the prompt
    ends with the space that joins the suffix to the question, and a first suffix token without a leading space
    merged with it when the text was read back (' ' + 'fixture' -> ' fixture'). suffix.joins now refuses such
    candidates. A byte-level BPE with one merge (space + x) shows it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from persist.attacks.suffix import Pieces, joins

    alphabet = sorted(set(bytes_to_unicode().values()))
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["Ġx"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "x")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)

    def enc(s: str) -> list[int]:
        return tok(s, add_special_tokens=False)["input_ids"]

    head, tail = "Is it safe? ", "<end>"
    p = Pieces(before=enc(head), after=enc(tail), refs=[], scale=[], n_aligned=0, head=head, tail=tail)
    assert enc("x") != enc(" x") and len(enc(" x")) == 1
    assert not joins(tok, p, enc("x"))  # ' ' then 'x' was optimised; the text reads back as ' x'
    assert joins(tok, p, enc(" x"))  # two spaces: ' ' then ' x', as optimised
    assert joins(tok, Pieces(before=[], after=[], refs=[], scale=[], n_aligned=0), enc("x"))  # no text: no check
