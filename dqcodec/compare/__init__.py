"""`dqc compare`: rate-distortion of dqc against other codecs on a user's own pictures, with a report.

codecs (what is compared), metrics (how), sweep (one image: rates, settings, round trips, cache),
crops (the side-by-side viewer's pictures), report (CSV, JSON, BD-rates, plots), page (index.html),
run (the command: jobs on a pool or Dask, progress, Ctrl-C).
"""
