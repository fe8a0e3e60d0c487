"""The collector: ingests results, keeps windowed statistics, serves pinglists, the
matrix, the findings and on-demand sweeps."""
