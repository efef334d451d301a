"""What comes back from the jobs: prediction CSVs and their sidecars, merging shards, scoring
predictions against labels."""
