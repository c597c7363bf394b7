import random
from pathlib import Path

from raysae.ranking import pareto_front
from raysae.sweep.pareto_plot import write_pareto


def test_pareto_front_matches_a_brute_force_search():
    rng = random.Random(0)
    for _ in range(50):
        points = [(rng.randint(0, 20), rng.random()) for _ in range(rng.randint(1, 30))]
        dominated = {
            i
            for i, (x, y) in enumerate(points)
            for j, (u, v) in enumerate(points)
            if j != i and u <= x and v <= y and (u, v) != (x, y)
        }
        expected = {i for i in range(len(points)) if i not in dominated}
        front = pareto_front(points)
        assert {points[i] for i in front} == {points[i] for i in expected}
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_pareto_plot_is_written_only_with_numbers(tmp_path):
    rows = [
        {"sae_id": f"s/t{i}", "architecture": a, "l0": l0, "fvu": f}
        for i, (a, l0, f) in enumerate([("topk", 32, 0.2), ("jumprelu", 60, 0.1), ("standard", 40, 0.3)])
    ]
    assert Path(write_pareto(rows, tmp_path / "p.png")).stat().st_size > 5_000
    assert write_pareto([{"sae_id": "s/t0", "status": "failed"}], tmp_path / "q.png") is None
