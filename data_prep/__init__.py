"""SAM data preparation: input sources (SA-1B, image folders, COCO), subset and held-out choice,
teacher-embedding shards, sample data."""
