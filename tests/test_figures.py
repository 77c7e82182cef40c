"""Figures: what they compute before they draw."""


def test_the_frontier_keeps_only_points_nothing_beats_on_both_axes():
    from medveil.evaluation.figures import pareto_front

    points = [(0.2, 80.0), (0.3, 85.0), (0.25, 79.0), (1.0, 86.0), (0.9, 84.0), (0.2, 78.0)]
    assert pareto_front(points) == [(0.2, 80.0), (0.3, 85.0), (1.0, 86.0)]
