"""SAM data preparation: SA-1B reading, subset choice, teacher-embedding shards, sample data."""
