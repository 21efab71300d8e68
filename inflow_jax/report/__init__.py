"""The job's report: every markdown table (tables.py), the PNG figures (plots.py), and the files in
the workdir (write.py)."""
