-- Token usage and cost per attempt and per run, so history can be aggregated by model and day.
ALTER TABLE runs ADD COLUMN usage VARCHAR;
ALTER TABLE step_runs ADD COLUMN usage VARCHAR;
