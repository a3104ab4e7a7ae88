"""Progress lines of long passes: throttled, with the rate and an ETA from the rate so far, and a last line."""
from autosrh_ray.rate_line import RateLine


def test_rate_line_throttles_and_estimates():
    now = [0.0]
    lines: list[str] = []
    line = RateLine("prepare: encode", 1000, lines.append, every=10.0, clock=lambda: now[0])
    for t, done in ((5.0, 100), (10.0, 200), (12.0, 250), (20.0, 400), (25.0, 1000)):
        now[0] = t
        line.update(done)
    assert lines == [
        "[prepare: encode] 200/1,000 rows (20%), 20 rows/s, ETA 0:00:40",  # 10 s in: 800 rows left at 20 rows/s
        "[prepare: encode] 400/1,000 rows (40%), 20 rows/s, ETA 0:00:30",
        "[prepare: encode] 1,000/1,000 rows (100%), 40 rows/s, in 0:00:25",  # the end is always logged
    ]
