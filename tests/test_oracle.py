"""privacy.oracle: the room for adaptivity (issue 17), and agents.baselines.TableK."""

import numpy as np
import pytest

from agents.baselines import TableK
from fr_models.data import load_faces, split_identities
from mixup_env import GLOBAL_FEATURES, SAMPLE_FEATURES, FrequencyMixupEnv
from privacy.oracle import Outcome, hand_schedules, oracle, run_table, score

G, F = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)


@pytest.fixture(scope="module")
def faces():
    data = load_faces("synthetic")
    private, public = split_identities(data.labels, 0.3, 0)
    return data.subset(private), data.subset(public)


def _phase_reward(record):
    """Pays for k = 6 in the first half of the run and k = 2 in the second: a known non-constant optimum."""
    want = 6 if record.step < record.episode_steps // 2 else 2
    return float(np.mean(record.k == want))


def _make(faces, reward=_phase_reward, **kw):
    private, public = faces
    args = dict(data=private, attacker_faces=public, action_mode="sample_discrete", k_values=(2, 4, 6), batch_size=16,
                episode_steps=6, eval_every=6, recipe="tiny", reward=reward, measure_all=True,
                attacker_kwargs={"components": 16, "simulated": 64, "refit_every": 3})
    return lambda: FrequencyMixupEnv(**{**args, **kw})


def test_table_k_follows_the_phase_and_ranks_the_samples_by_a_feature(faces):
    env = _make(faces)()
    policy = TableK(env, [(2, 6), (4, 4)], feature="loss")
    obs = np.zeros(G + 16 * F, np.float32)
    obs[G::F] = np.linspace(0, 1, 16)[::-1]  # sample 0 the hardest (highest loss)
    k = env.decode_action(policy.predict(obs)[0])[0]
    assert k.tolist() == [6] * 8 + [2] * 8  # the easy half gets the first column, the hard half the second
    obs[0] = 0.75  # second phase
    assert env.decode_action(policy.predict(obs)[0])[0].tolist() == [4] * 16
    with pytest.raises(ValueError, match="rectangular table"):
        TableK(env, [(2, 6), (4,)])
    with pytest.raises(ValueError, match="k=3 is not one of"):
        TableK(env, [(3,)])
    with pytest.raises(ValueError, match="feature='age' is unknown"):
        TableK(env, [(2,)], feature="age")
    batch = FrequencyMixupEnv(batch_size=16, episode_steps=2, recipe="tiny")
    with pytest.raises(ValueError, match="needs a per-sample action mode"):
        TableK(batch, [(2, 6)])


def test_hand_schedules():
    s = hand_schedules((2, 3, 4, 5, 6), phases=3, kinds=2)
    assert s["rising"] == ((2, 2), (4, 4), (6, 6)) and s["falling"] == ((6, 6), (4, 4), (2, 2))
    assert s["hard_more"] == ((2, 6),) * 3 and s["hard_less"] == ((6, 2),) * 3
    assert set(hand_schedules((2, 6), 2, 1)) == {"rising", "falling"}


def _o(table, seed, acc, priv, ret=0.0):
    return Outcome(table, seed, ret, acc, priv, 0.5, 3.0, 1.0)


def test_matched_privacy_score_reads_the_frontier_of_the_same_seed():
    fixed = {2: [_o(((2,),), 0, 0.8, 0.2), _o(((2,),), 1, 0.9, 0.0)],
             6: [_o(((6,),), 0, 0.4, 0.6), _o(((6,),), 1, 0.5, 0.4)]}
    # seed 0: the frontier at accuracy 0.6 is 0.4; seed 1: at 0.7 it is 0.2 -> gains 0.1 and 0.1
    runs = [_o(((2, 6),), 0, 0.6, 0.5), _o(((2, 6),), 1, 0.7, 0.3)]
    assert score(runs, fixed, "matched_privacy") == pytest.approx(0.1)
    # more accurate than every fixed k: compared with the most accurate one (seed 0: 0.2)
    assert score([_o(((2, 6),), 0, 0.95, 0.25)], fixed, "matched_privacy") == pytest.approx(0.05)
    assert score(runs, fixed, "reward") == 0.0
    with pytest.raises(ValueError, match="criterion='loss' is unknown"):
        score(runs, fixed, "loss")


def test_the_search_finds_a_known_non_constant_optimum_and_resumes(faces, tmp_path):
    make = _make(faces)
    settings = {"test": "phase_reward"}
    result = oracle(make, settings, seeds=(0,), phases=2, kinds=1, store=tmp_path, criteria=("reward",), log=None)
    table, runs, tried = result.searched["reward"]
    assert table == ((6,), (2,)) and runs[0].episode_return == pytest.approx(6.0)  # every sample right, 6 steps
    assert max(result.scores["reward"][f"fixed k={k}"] for k in (2, 4, 6)) == pytest.approx(3.0)
    assert result.gaps()["reward"] == pytest.approx(3.0)
    assert result.scores["reward"]["falling"] == pytest.approx(6.0)  # the hand-written 6 then 2 is it too
    assert 0 <= runs[0].privacy <= 1 and 0 < runs[0].mean_max_weight <= 1 and runs[0].mean_k == 4.0
    again = oracle(make, settings, seeds=(0,), phases=2, kinds=1, store=tmp_path, criteria=("reward",), log=None)
    assert again.runs == 0 and again.scores == result.scores  # everything read back from the store


def test_run_table_needs_the_online_attacker(faces):
    private, _ = faces
    with pytest.raises(ValueError, match="attacker_faces"):
        run_table(lambda: FrequencyMixupEnv(data=private, batch_size=16, episode_steps=2, recipe="tiny"), [(2,)], 0)


def test_a_reach_of_one_tries_only_the_neighbouring_k(faces, tmp_path):
    make = _make(faces, k_values=(2, 3, 4, 5, 6), reward=lambda rec: -abs(rec.k_mean - 4.0))
    result = oracle(make, {"test": "reach"}, seeds=(0,), phases=1, kinds=1, store=tmp_path, criteria=("reward",),
                    log=None, reach=1)
    tried = result.searched["reward"][2]
    assert tried == [((4,),), ((3,),), ((5,),)]  # from the best fixed k (4), only k = 3 and 5
