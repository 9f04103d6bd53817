"""The training report: what a job's Debugger and Profiler data say, as one HTML page.

Built at the end of every training job into ``/opt/ml/output/data/report.html`` and
rebuilt anywhere from a job's output with ``python -m dogbreed.report DIR``.
"""
