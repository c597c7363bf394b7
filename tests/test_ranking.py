import random

from raysae.ranking import pareto_front


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
