"""The collector: ingests results, keeps windowed statistics, serves pinglists, the
matrix, the findings and on-demand sweeps.

``service.py`` holds the state and the logic and speaks no HTTP; ``http.py`` is the
API in front of it."""
